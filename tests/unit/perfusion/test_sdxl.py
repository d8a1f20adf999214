"""SDXL: the SD 1.5 guarantees on a tiny SDXL-shaped pipeline built from configs.

Two CLIP encoders (32 + 64 = 96-d concatenated, bigG's legacy eos_token_id = 2 included), a
UNet with SDXL's block layout shrunk (DownBlock2D first, text_time added conditions, linear
projections, 17 attn2 layers), 16 px images. Random weights: no download.
"""

import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load as load_safetensors
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

import workers.perfusion.processor as processor
from tests.unit.perfusion.conftest import (
    CAPTIONS,
    MAX_LEN,
    TINY_FIT,
    WORDS,
    make_images,
    pixels,
    state_snapshot,
)
from workers.perfusion import (
    Concept,
    ConceptControl,
    ConceptMismatch,
    apply_concepts,
    compute_covariance,
    concept_from_bytes,
    concept_to_bytes,
    default_batch,
    fit_concept,
    generate,
    load_concept,
    load_pipeline,
    model_fingerprint,
    save_concept,
    text_side,
    validate_concept,
)
from workers.perfusion.apply import key_target
from workers.perfusion.cli import main
from workers.perfusion.fit import superclass_vectors
from workers.perfusion.pipeline import cross_attention_layers
from workers.perfusion.processor import (
    PerfusionAttnProcessor,
    concept_basis,
    edited_projection,
    make_text_edit,
    score_and_energy,
    single_concept_projection,
)
from workers.perfusion.sdxl import SDXL_UNET, PooledLock
from workers.perfusion.testing import write_word_tokenizer

WIDTHS = (32, 64)
D = sum(WIDTHS)
PROMPTS = ["a red cat on grass", "the blue sofa at the beach", "my good image"]
# Measured on this tiny 96-d random SDXL (seed 0, 3 Euler steps, padding and the zero negative
# unedited): max 1/255, mean 0.05-0.14/255 over PROMPTS. Tighter than SD 1.5's 6 and 1.0.
MAX_PRIOR_DIFF = 2
MEAN_PRIOR_DIFF = 0.3


def make_tiny_sdxl(folder: Path, seed: int = 0) -> StableDiffusionXLPipeline:
    """A seeded random SDXL-shaped pipeline: 16 px images, 8x8 latents, 17 attn2 layers."""
    tokenizer = write_word_tokenizer(folder, WORDS, MAX_LEN)
    tokenizer_2 = CLIPTokenizer(  # SDXL's second tokenizer pads with "!", not EOS
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        model_max_length=MAX_LEN,
        pad_token="!",
    )
    torch.manual_seed(seed)

    def clip(cls: type, hidden: int, layers: int, **extra: int) -> nn.Module:
        config = CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=2,  # the legacy value SDXL's configs carry: pooling takes argmax(ids)
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_attention_heads=4,
            num_hidden_layers=layers,
            max_position_embeddings=MAX_LEN,
            vocab_size=len(tokenizer),
            **extra,
        )
        return cls(config)

    text_encoder = clip(CLIPTextModel, WIDTHS[0], 2)
    text_encoder_2 = clip(CLIPTextModelWithProjection, WIDTHS[1], 3, projection_dim=16)
    unet = UNet2DConditionModel(
        **dict(
            SDXL_UNET,
            sample_size=8,
            block_out_channels=(16, 32, 32),
            transformer_layers_per_block=(1, 1, 2),
            attention_head_dim=(2, 4, 4),
            cross_attention_dim=D,
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 16,
            norm_num_groups=8,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def xl(tmp_path_factory: pytest.TempPathFactory) -> StableDiffusionXLPipeline:
    return make_tiny_sdxl(tmp_path_factory.mktemp("tiny-xl"))


@pytest.fixture(scope="module")
def xl_cov(xl):
    return compute_covariance(xl, CAPTIONS, batch_size=32)


def xl_state(pipe) -> dict[str, torch.Tensor]:
    out = state_snapshot(pipe)
    out.update({f"te2.{k}": v.clone() for k, v in pipe.text_encoder_2.state_dict().items()})
    return out


@pytest.fixture(scope="module")
def xl_fitted(xl, xl_cov):
    before = xl_state(xl)
    processors = dict(xl.unet.attn_processors)
    concept = fit_concept(xl, make_images(), "<sks>", "dog", TINY_FIT, xl_cov)
    return {"concept": concept, "before": before, "processors": processors}


def run(pipe, prompt, **kw):
    return pixels(generate(pipe, prompt, steps=3, seed=1, **kw)[0])


def test_text_side_is_the_pipelines_own_encoding(xl):
    text = text_side(xl)
    assert text.arch == "sdxl" and text.dim == D and text.widths == list(WIDTHS)
    prompt = "a photo of a dog on grass"
    with torch.no_grad():
        embeds, _, pooled, _ = xl.encode_prompt(prompt, do_classifier_free_guidance=False)
        mine = text.encode(text.tokenize([prompt]))
        assert torch.equal(mine, embeds)  # penultimate states of both encoders, concatenated
        assert torch.equal(text.pooled([prompt]), pooled)
    assert text_side(SimpleNamespace(text_encoder_2=None)).arch == "sd"


def test_fit_trains_both_token_rows_and_value_targets_only(xl, xl_fitted):
    concept = xl_fitted["concept"]
    assert concept.architecture == "sdxl"
    before = xl_fitted["before"]
    after = xl_state(xl)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "base weights unchanged"
    assert dict(xl.unet.attn_processors) == xl_fitted["processors"]
    assert "<sks>" not in xl.tokenizer.get_vocab() and "<sks>" not in xl.tokenizer_2.get_vocab()
    assert not xl.text_encoder_2._forward_hooks
    embed_init, e_super = superclass_vectors(xl, "dog")
    for k, encoder in enumerate((xl.text_encoder, xl.text_encoder_2)):  # each from its own table
        (dog,) = xl.tokenizer("dog", add_special_tokens=False).input_ids
        row = encoder.get_input_embeddings().weight[dog]
        part = slice(sum(WIDTHS[:k]), sum(WIDTHS[: k + 1]))
        assert torch.equal(embed_init[part], row)
        assert (concept.token_embedding[part] - row).abs().max() > 1e-4, f"row {k} trained"
    assert concept.i_star.shape == concept.score.shape == e_super.shape == (D,)
    for name, attn in cross_attention_layers(xl.unet).items():
        assert attn.to_k.in_features == D
        assert torch.equal(concept.o_k[name], key_target(attn, e_super)), "o*_K is locked"
        init_v = torch.nn.functional.linear(e_super, attn.to_v.weight)
        assert (concept.o_v[name] - init_v).abs().max() > 1e-3, "o*_V must be trained"
    assert len(concept.o_v) == 17


def test_fit_save_load_generate_bit_exact(xl, xl_fitted, tmp_path):
    concept = xl_fitted["concept"]
    path = tmp_path / "xl.safetensors"
    save_concept(concept, path, dtype=torch.float32)
    loaded = load_concept(path)
    assert loaded.architecture == "sdxl" and loaded.o_k == {}
    prompt = "a photo of a <sks> on grass"
    image = run(xl, prompt, concepts=[loaded])
    assert np.array_equal(image, run(xl, prompt, concepts=[concept]))
    assert not np.array_equal(image, run(xl, "a photo of a dog on grass"))


def test_removal_restores_the_pipeline_bit_exactly(xl, xl_fitted):
    tokenizers = (xl.tokenizer, xl.tokenizer_2)
    embeddings = tuple(e.get_input_embeddings() for e in (xl.text_encoder, xl.text_encoder_2))
    processors = dict(xl.unet.attn_processors)
    before = run(xl, PROMPTS[0])
    plain = pixels(xl(PROMPTS[0], num_inference_steps=2, generator=torch.Generator()).images[0])
    handle = apply_concepts(xl, [xl_fitted["concept"]])
    assert "<sks>" in xl.tokenizer.get_vocab() and "<sks>" in xl.tokenizer_2.get_vocab()
    # bigG: the real-token recorder and the pooled lock; CLIP-L: the recorder
    assert len(xl.text_encoder._forward_hooks) == 1
    assert len(xl.text_encoder_2._forward_hooks) == 2
    assert isinstance(xl.unet.attn_processors[next(k for k in processors if "attn2" in k)],
                      PerfusionAttnProcessor)  # fmt: skip
    xl("a photo of a <sks>", num_inference_steps=2)  # a plain diffusers call works
    handle.remove()
    assert (xl.tokenizer, xl.tokenizer_2) == tokenizers
    assert tuple(e.get_input_embeddings() for e in (xl.text_encoder, xl.text_encoder_2)) == (
        embeddings
    )
    assert not xl.text_encoder._forward_hooks and not xl.text_encoder_2._forward_hooks
    assert dict(xl.unet.attn_processors) == processors
    assert np.array_equal(run(xl, PROMPTS[0]), before)
    again = xl(PROMPTS[0], num_inference_steps=2, generator=torch.Generator()).images[0]
    assert np.array_equal(pixels(again), plain)


def test_prompts_without_the_concept_are_unchanged_at_their_tokens(xl, xl_fitted):
    """Encodings and pooled vector bit-identical; images within the SD 1.5 bounds."""
    concept = xl_fitted["concept"]
    with torch.no_grad():
        base = [xl.encode_prompt(p, do_classifier_free_guidance=False) for p in PROMPTS]
        with apply_concepts(xl, [concept]):
            applied = [xl.encode_prompt(p, do_classifier_free_guidance=False) for p in PROMPTS]
    for (e0, _, p0, _), (e1, _, p1, _) in zip(base, applied, strict=True):
        assert torch.equal(e0, e1) and torch.equal(p0, p1)
    for prompt in PROMPTS:
        diff = np.abs(run(xl, prompt, concepts=[concept]) - run(xl, prompt))
        print(f"SDXL {prompt!r}: max {diff.max()}/255, mean {diff.mean():.2f}/255")
        assert diff.max() <= MAX_PRIOR_DIFF and diff.mean() <= MEAN_PRIOR_DIFF


def test_padding_and_the_zero_negative_are_left_unedited(xl, xl_fitted):
    """K/V of non-real positions (padding, SDXL's all-zero negative) are the base projections."""
    concept = xl_fitted["concept"]
    seen: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    original = PerfusionAttnProcessor._key_value

    def spy(self, attn, states):
        key, value = original(self, attn, states)
        if not seen:
            positions = self.edit.positions.mask_for(states).clone()
            seen["kv"] = (states, key, value, positions, attn)
        return key, value

    PerfusionAttnProcessor._key_value = spy
    try:
        run(xl, "a <sks> on grass", concepts=[concept])
    finally:
        PerfusionAttnProcessor._key_value = original
    states, key, value, positions, attn = seen["kv"]
    assert positions.shape == states.shape[:2] and not positions[0].any()  # zero negative
    real = positions[1]
    assert 2 < int(real.sum()) < MAX_LEN
    with torch.no_grad():
        outside = ~positions
        assert torch.equal(key[outside], attn.to_k(states)[outside])
        assert torch.equal(value[outside], attn.to_v(states)[outside])
        assert not torch.equal(value[positions], attn.to_v(states)[positions])


@pytest.fixture
def changed_positions(monkeypatch):
    """[(grad enabled, (B, L) bool positions the projection changed)] for every edited call."""
    calls: list[tuple[bool, torch.Tensor]] = []
    original = processor.edited_projection

    def spy(linear, e, *args, **kwargs):
        out = original(linear, e, *args, **kwargs)
        with torch.no_grad():
            changed = (out.float() - linear(e).float()).abs().amax(-1) > 0
        calls.append((torch.is_grad_enabled(), changed.cpu()))
        return out

    monkeypatch.setattr(processor, "edited_projection", spy)
    return calls


def first_eos_mask(ids: torch.Tensor, eos: int) -> torch.Tensor:
    """Positions up to and including the first EOS of each row."""
    first_eos = (ids == eos).int().argmax(-1)
    return torch.arange(ids.shape[1])[None] <= first_eos[:, None]


def unmatched_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "Perfusion: text encodings" in str(w.message)]


def test_fit_and_its_preview_edit_only_real_tokens(xl, xl_cov, changed_positions):
    """The fit edits its prompts' real tokens; the preview (a plain call, zero negative) its
    prompt's real tokens and nothing of the all-zero negative; every encoding is recognised."""
    seen_ids: list[tuple[bool, torch.Tensor]] = []
    hook = xl.text_encoder.register_forward_pre_hook(
        lambda module, args: (
            seen_ids.append((torch.is_grad_enabled(), args[0].cpu())) if args else None
        )
    )
    config = replace(TINY_FIT, steps=1, preview_every=1, preview_steps=1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit_concept(xl, make_images(), "<pos>", "dog", config, xl_cov, on_progress=print)
    finally:
        hook.remove()
    assert not unmatched_warnings(caught)
    training = [c for grad, c in changed_positions if grad]
    preview = [c for grad, c in changed_positions if not grad]
    assert training and preview
    eos = xl.tokenizer.eos_token_id
    # CLIP-L calls: the micro step's batch is the one with gradients (i*'s refresh after the
    # step encodes the templates without); the last: the preview's prompt (no negative call)
    train_ids = [ids for grad, ids in seen_ids if grad][-1]
    prompt_ids = seen_ids[-1][1]
    want = first_eos_mask(train_ids, eos)
    assert want.sum() < want.numel(), "the training prompts have padding"
    for changed in training:
        assert torch.equal(changed, want)
    zero = torch.zeros_like(prompt_ids, dtype=torch.bool)
    want = torch.cat([zero, first_eos_mask(prompt_ids, eos)])  # CFG: negative first
    for changed in preview:
        assert torch.equal(changed, want)


@pytest.mark.parametrize("negative", ["red sofa", ""])
def test_generate_and_plain_calls_edit_only_real_tokens(xl, xl_fitted, changed_positions, negative):
    """`generate` and a plain `pipe(...)` edit the same rows: the prompt's and a written
    negative's real tokens; an empty negative is SDXL's all-zero one, edited nowhere."""
    concept = xl_fitted["concept"]
    prompt = "a photo of a <sks> on grass"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate(xl, prompt, [concept], negative_prompt=negative, steps=2, n=2)
        assert changed_positions
        via_generate = list(changed_positions)
        changed_positions.clear()
        with apply_concepts(xl, [concept]):
            xl(
                prompt,
                negative_prompt=negative or None,
                num_inference_steps=2,
                num_images_per_prompt=2,
            )
            ids = xl.tokenizer([negative, prompt], padding="max_length", return_tensors="pt")
    assert not unmatched_warnings(caught)
    mask = first_eos_mask(ids.input_ids, xl.tokenizer.eos_token_id)
    if not negative:
        mask[0] = False
    want = torch.stack([mask[0], mask[0], mask[1], mask[1]])
    for calls in (via_generate, changed_positions):
        assert calls
        for _, changed in calls:
            assert torch.equal(changed, want), (changed, want)


@pytest.mark.parametrize("superclass", ["dog", "teddy bear"])
def test_training_gate_on_the_concept_token_is_open_from_the_first_step(
    xl, xl_cov, monkeypatch, superclass
):
    """i* starts at the least-C⁻¹-norm point of the token's 2048-d-style (here 96-d) template
    encodings, so the training gate is open from step 0, whatever the superclass."""
    import workers.perfusion.fit as fit

    for tokenizer in (xl.tokenizer, xl.tokenizer_2):
        pieces = tokenizer(superclass, add_special_tokens=False).input_ids
        assert len(pieces) == (1 if superclass == "dog" else 7)
    edits, gates = [], []
    install, micro_step = fit.install_processors, fit._micro_step

    def spy_install(unet, edit, *args):
        edits.append(edit)
        return install(unet, edit, *args)

    def spy_step(*args):
        loss, encodings = micro_step(*args)
        edit = edits[-1]
        assert encodings.shape[-1] == D
        s = encodings @ edit.score[:, 0]
        gates.append(torch.sigmoid((s - edit.beta[0]) / edit.tau[0]))
        return loss, encodings

    monkeypatch.setattr(fit, "install_processors", spy_install)
    monkeypatch.setattr(fit, "_micro_step", spy_step)
    config = replace(TINY_FIT, steps=3)
    fit_concept(xl, make_images(), "<gate>", superclass, config, xl_cov)
    assert len(gates) == 3
    print(f"{superclass!r}: step-1 gates {[round(g, 3) for g in gates[0].tolist()]}")
    assert gates[0].min() > 0.5, "the training gate must be open on the concept token at step 0"
    assert torch.cat(gates).min() > 0.5, "and it stays open while the fit runs"


def test_pooled_embedding_reads_the_concept_as_its_superclass(xl, xl_fitted):
    concept = xl_fitted["concept"]
    with torch.no_grad():
        *_, want, _ = xl.encode_prompt("a photo of a dog", do_classifier_free_guidance=False)
        with apply_concepts(xl, [concept]):
            *_, got, _ = xl.encode_prompt("a photo of a <sks>", do_classifier_free_guidance=False)
            ids = xl.tokenizer_2("a photo of a <sks>", return_tensors="pt").input_ids
            hooks = xl.text_encoder_2._forward_hooks
            (handle,) = [
                h
                for h in xl._perfusion_applied.tokens.hooks
                if isinstance(hooks.get(h.id), PooledLock)
            ]
            handle.remove()  # what SDXL's legacy argmax pooling would do without the lock
            unlocked = xl.text_encoder_2(ids)[0]
            xl._perfusion_applied.tokens.hooks.remove(handle)
    assert torch.equal(got, want)
    assert not torch.allclose(unlocked, want)


def test_one_concept_algebra_in_the_concatenated_space(xl, xl_cov, xl_fitted):
    concept = xl_fitted["concept"]
    cinv = xl_cov.inverse
    assert cinv.shape == (D, D)
    score, energy = score_and_energy(concept.i_star, cinv)
    torch.testing.assert_close(score, concept.score)
    name, attn = next(iter(cross_attention_layers(xl.unet).items()))
    layers = (attn.to_k, concept.o_k[name]), (attn.to_v, concept.o_v[name])
    saturated = make_text_edit(
        concept.i_star[None], score[None], torch.tensor([energy]), [-100.0], [1.0]
    )
    edit = make_text_edit(concept.i_star[None], score[None], torch.tensor([energy]), [0.7], [0.15])
    g = torch.Generator().manual_seed(0)
    e = torch.randn(2, 5, D, generator=g) + 0.8 * concept.i_star
    ortho = torch.randn(4, D, generator=g)
    ortho = ortho - ((ortho @ cinv @ concept.i_star) / energy)[:, None] * concept.i_star
    with torch.no_grad():
        for linear, target in layers:
            out = edited_projection(linear, concept.i_star[None, None], saturated, target[None])
            torch.testing.assert_close(out[0, 0], target, atol=1e-4, rtol=1e-4)
            got = edited_projection(linear, e, edit, target[None])
            want = single_concept_projection(
                linear.weight, e, concept.i_star, cinv, target, 0.7, 0.15
            )
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
            leak = torch.sigmoid(torch.tensor(-0.7 / 0.15)) * target
            passed = edited_projection(linear, ortho[None], edit, target[None])[0]
            torch.testing.assert_close(passed - leak, linear(ortho), atol=1e-4, rtol=1e-4)


def second_concept(first: Concept, cinv: torch.Tensor) -> Concept:
    i_star = first.i_star + torch.randn(
        first.i_star.shape, generator=torch.Generator().manual_seed(1)
    )
    score, energy = score_and_energy(i_star, cinv)
    return replace(
        first,
        token="<two>",
        superclass="cat",
        i_star=i_star,
        score=score,
        i_star_energy=energy,
        token_embedding=first.token_embedding.flip(0),
        o_v={k: -v for k, v in first.o_v.items()},
        o_k={},
    )


def test_two_concepts_algebra_generation_and_global_locking(xl, xl_cov, xl_fitted):
    first = xl_fitted["concept"]
    second = second_concept(first, xl_cov.inverse)
    cinv = xl_cov.inverse
    i_stars = torch.stack([first.i_star, second.i_star])
    basis, proj = concept_basis(i_stars, i_stars @ cinv)
    torch.testing.assert_close(basis.T @ cinv @ basis, torch.eye(2), atol=1e-4, rtol=0)
    in_span = torch.tensor([0.4, -1.1]) @ i_stars
    assert (in_span - (in_span @ proj) @ basis.T).abs().max() < 1e-3 * in_span.abs().max()

    prompt = "a <sks> and a <two> on grass"
    controls = [ConceptControl(0.7, 0.15), ConceptControl(0.6, 0.2)]
    plain = run(xl, prompt, concepts=[first, second], controls=controls)
    locked = run(xl, prompt, concepts=[first, second], controls=controls, global_locking=True)
    only_first = run(xl, prompt.replace("<two>", "cat"), concepts=[first])
    assert plain.shape == locked.shape == (16, 16, 3)
    assert not np.array_equal(plain, locked) and not np.array_equal(plain, only_first)
    assert getattr(xl, "_perfusion_applied", None) is None
    assert not xl.text_encoder_2._forward_hooks
    with torch.no_grad(), apply_concepts(xl, [first, second]):  # both pool as superclasses
        *_, got, _ = xl.encode_prompt(prompt, do_classifier_free_guidance=False)
    with torch.no_grad():
        *_, want, _ = xl.encode_prompt(
            "a dog and a cat on grass", do_classifier_free_guidance=False
        )
    assert torch.equal(got, want)


def test_mismatched_architecture_is_refused_with_a_readable_message(
    xl, xl_fitted, fitted, tiny_pipe
):
    sd_concept = fitted["concept"]
    assert sd_concept.architecture == "sd"
    with pytest.raises(
        ConceptMismatch, match="made for Stable Diffusion 1.x/2.x.*Stable Diffusion XL"
    ):
        validate_concept(sd_concept, xl)
    with pytest.raises(ConceptMismatch, match="made for Stable Diffusion XL"):
        apply_concepts(tiny_pipe, [xl_fitted["concept"]])
    with pytest.raises(ConceptMismatch):
        apply_concepts(xl, [sd_concept])
    for pipe in (xl, tiny_pipe):
        assert getattr(pipe, "_perfusion_applied", None) is None
    assert "<sks>" not in xl.tokenizer_2.get_vocab() and not xl.text_encoder_2._forward_hooks
    # a file that claims the other architecture is refused even with matching shapes
    data = concept_to_bytes(replace(xl_fitted["concept"], architecture="sd"))
    with pytest.raises(ConceptMismatch, match="Stable Diffusion 1.x/2.x"):
        validate_concept(concept_from_bytes(data), xl)


def test_fit_defaults_and_native_size(xl):
    assert default_batch("sdxl", True) == (4, 4) and default_batch("sd", True) == (16, 1)
    assert xl.default_sample_size * xl.vae_scale_factor == 16  # generate's default size
    assert run(xl, "a red cat").shape == (16, 16, 3)


def test_sdxl_folder_loads_as_sdxl_and_the_cli_runs_end_to_end(tmp_path, capsys, monkeypatch):
    model = tmp_path / "model"
    make_tiny_sdxl(tmp_path / "tok").save_pretrained(model)
    pipe = load_pipeline(str(model))
    assert isinstance(pipe, StableDiffusionXLPipeline)
    images = tmp_path / "images"
    images.mkdir()
    for k, image in enumerate(make_images(2)):
        image.save(images / f"{k}.png")
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(CAPTIONS[:100]))
    concept = tmp_path / "sks.safetensors"
    monkeypatch.setenv("PERFUSION_CACHE", str(tmp_path / "cache"))
    base = ["--base", str(model)]
    fit = ["fit", *base, "--images", str(images), "--token", "<sks>", "--superclass", "dog"]
    fit += ["--out", str(concept), "--steps", "2", "--batch-size", "1", "--grad-accum", "1"]
    assert main([*fit, "--captions", str(captions), "--resolution", "16"]) == 0
    out = tmp_path / "out"
    gen = ["generate", *base, "--concept", str(concept), "--prompt", "a photo of a <sks>"]
    assert main([*gen, "--out", str(out), "--steps", "2"]) == 0
    assert len(list(out.glob("*.png"))) == 1
    assert main(["info", str(concept)]) == 0
    assert "architecture: sdxl (Stable Diffusion XL)" in capsys.readouterr().out


def test_sdxl_shaped_concept_file_size(tmp_path, capsys):
    with torch.device("meta"):  # SDXL base's real layer names and widths, no weight memory
        unet = UNet2DConditionModel(**SDXL_UNET)
    tokenizer = write_word_tokenizer(tmp_path / "tok", WORDS, MAX_LEN)

    def clip(cls: type, hidden: int, **extra: int) -> nn.Module:
        return cls(
            CLIPTextConfig(
                hidden_size=hidden,
                intermediate_size=64,
                num_attention_heads=hidden // 64,
                num_hidden_layers=1,
                max_position_embeddings=MAX_LEN,
                vocab_size=len(tokenizer),
                **extra,
            )
        )

    pipe = SimpleNamespace(
        unet=unet,
        text_encoder=clip(CLIPTextModel, 768),
        text_encoder_2=clip(CLIPTextModelWithProjection, 1280, projection_dim=1280),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
    )
    layers = cross_attention_layers(unet)
    assert len(layers) == 70 and text_side(pipe).dim == 2048
    assert sum(a.to_v.out_features for a in layers.values()) == 83_200
    g = torch.Generator().manual_seed(0)
    vector = lambda n: torch.randn(n, generator=g)  # noqa: E731
    concept = Concept(
        token="<sks>",
        superclass="dog",
        token_embedding=vector(2048),
        i_star=vector(2048),
        e_super=vector(2048),
        o_k={},
        o_v={name: vector(a.to_v.out_features) for name, a in layers.items()},
        score=vector(2048),
        i_star_energy=123.0,
        base_fingerprint=model_fingerprint(pipe),
        covariance_fingerprint="c" * 64,
        base_model_id="stabilityai/stable-diffusion-xl-base-1.0",
        training={"steps": 400, "batch_size": 4, "grad_accum": 4, "resolution": 1024},
        architecture="sdxl",
    )
    validate_concept(concept, pipe)
    path = tmp_path / "sdxl.safetensors"
    save_concept(concept, path, dtype=torch.float16)
    size = path.stat().st_size
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"size:         {size} bytes" in out and "architecture: sdxl" in out
    assert "up_blocks.0.attentions.2.transformer_blocks.9.attn2" in out  # names survive
    vectors = 2 * (4 * 2048 + 83_200)  # fp16: the five tensors, nothing per token position
    assert vectors < size <= vectors + 4096  # the rest is the header (70 layer names, metadata)
    small = tmp_path / "sdxl-int8.safetensors"
    save_concept(concept, small, dtype=torch.int8)
    small_size = small.stat().st_size
    assert main(["info", str(small)]) == 0
    out = capsys.readouterr().out
    assert f"size:         {small_size} bytes" in out and "I8" in out
    with capsys.disabled():
        print(
            f"\nSDXL-shaped concept file: fp16 {size} bytes ({size / 1024:.1f} KiB), "
            f"int8 o_v {small_size} bytes ({small_size / 1024:.1f} KiB)"
        )
    assert small_size <= 160 * 1024  # the goal; fp16 o_v alone is 162.5 KiB
    default = concept_to_bytes(concept)  # SDXL's default storage is int8
    assert len(default) == small_size and load_safetensors(default)["o_v"].dtype == torch.int8
    loaded = load_concept(small)
    validate_concept(loaded, pipe)
    for name, vector in concept.o_v.items():  # block absmax / 254 at most, plus fp16 scales
        blocks = vector.split(64)
        bound = torch.cat([b.abs().max().expand(len(b)) for b in blocks]) / 254 * 1.01
        assert ((loaded.o_v[name] - vector).abs() <= bound).all(), name


def test_int8_files_round_trip_and_re_save_losslessly(xl, xl_fitted):
    concept = xl_fitted["concept"]
    data = concept_to_bytes(concept, dtype=torch.int8)
    loaded = concept_from_bytes(data)
    again = load_safetensors(concept_to_bytes(loaded, dtype=torch.int8))
    first = load_safetensors(data)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    error = max((loaded.o_v[n] - v).abs().max() / v.abs().max() for n, v in concept.o_v.items())
    assert 0 < error <= 1 / 254 * 1.01
    prompt = "a photo of a <sks> on grass"
    diff = np.abs(run(xl, prompt, concepts=[loaded]) - run(xl, prompt, concepts=[concept]))
    print(f"SDXL int8 file vs fp32 concept: max {diff.max()}/255, mean {diff.mean():.2f}/255")
    assert diff.max() <= 2


def test_an_fp16_sdxl_vae_encodes_training_images_in_fp32_and_is_restored(tmp_path):
    import copy

    from workers.perfusion.training_data import _encode_images, encode_training_images

    pipe = make_tiny_sdxl(tmp_path)
    pipe.vae.to(torch.float16)
    before = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    reference = copy.deepcopy(pipe.vae).to(torch.float32)
    latents, _ = encode_training_images(pipe, make_images(1), None, 16)
    want, _ = _encode_images(reference, make_images(1), None, 16)
    assert torch.equal(latents, want)
    assert pipe.vae.dtype == torch.float16
    assert all(torch.equal(before[k], v) for k, v in pipe.vae.state_dict().items())


def test_steady_state_sdxl_steps_make_no_host_syncs(xl, xl_cov, monkeypatch):
    """As for SD (test_host_syncs): the pooled lock and the concatenated encodings included."""
    from tests.unit.perfusion.test_host_syncs import _mark_steps, counting_syncs

    with counting_syncs(monkeypatch) as counter:
        calls = _mark_steps(monkeypatch, counter, 2, 4)
        fit_concept(xl, make_images(), "<sync>", "dog", replace(TINY_FIT, steps=6), xl_cov)
        counter.active = False
    assert calls[0] == 6
    assert counter.found == {}, counter.found
