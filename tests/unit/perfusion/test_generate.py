"""Applying concepts: prior preservation, exact removal, multi-concept, controls, cancel."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.unit.perfusion.conftest import pixels
from workers.perfusion import (
    ConceptControl,
    GenerationCanceled,
    apply_concepts,
    generate,
    load_concepts_into,
    remove_concepts,
    save_concept,
    strength_to_control,
)
from workers.perfusion.pipeline import cross_attention_layers
from workers.perfusion.processor import PerfusionAttnProcessor, score_and_energy

PROMPTS = ["a red cat on grass", "the blue sofa at the beach", "my good image"]
# Measured on the tiny 64-d random model with padding left unedited: max 5/255, mean
# < 0.9/255 (before, with padding edited too: max 6-7, mean < 1.6). The gate alone contributes
# <= 1/255; the rest is the W(e - s i*) removal on words whose s is not exactly 0
# (|s| ~ 1/sqrt(D): a 64-d random text encoder is much noisier than CLIP's 768-d one).
MAX_PRIOR_DIFF = 6
MEAN_PRIOR_DIFF = 1.0


def run(pipe, prompt, **kw):
    return pixels(generate(pipe, prompt, steps=3, seed=1, **kw)[0])


def test_prompts_without_the_concept_barely_change(tiny_pipe, fitted):
    concept = fitted["concept"]
    for prompt in PROMPTS:
        base = run(tiny_pipe, prompt)
        diff = np.abs(run(tiny_pipe, prompt, concepts=[concept]) - base)
        print(f"{prompt!r}: max {diff.max()}/255, mean {diff.mean():.2f}/255")
        assert diff.max() <= MAX_PRIOR_DIFF and diff.mean() <= MEAN_PRIOR_DIFF


def test_removal_restores_bit_identical_generation(tiny_pipe, fitted):
    vocab_size = len(tiny_pipe.tokenizer)
    embedding = tiny_pipe.text_encoder.get_input_embeddings()
    processors = dict(tiny_pipe.unet.attn_processors)
    before = run(tiny_pipe, PROMPTS[0])
    handle = apply_concepts(tiny_pipe, [fitted["concept"]])
    assert isinstance(
        tiny_pipe.unet.attn_processors[next(iter(k for k in processors if "attn2" in k))],
        PerfusionAttnProcessor,
    )
    with_concept = run(tiny_pipe, "a photo of a <sks>")
    handle.remove()
    assert len(tiny_pipe.tokenizer) == vocab_size
    assert tiny_pipe.text_encoder.get_input_embeddings() is embedding
    assert dict(tiny_pipe.unet.attn_processors) == processors
    assert np.array_equal(run(tiny_pipe, PROMPTS[0]), before)
    assert not np.array_equal(with_concept, run(tiny_pipe, "a photo of a dog"))


def test_concepts_work_in_plain_diffusers_calls_and_context_manager(tiny_pipe, fitted):
    processors = dict(tiny_pipe.unet.attn_processors)
    with apply_concepts(tiny_pipe, [fitted["concept"]]):
        image = tiny_pipe("a photo of <sks>", num_inference_steps=2).images[0]
        assert image.size == (16, 16)
    assert dict(tiny_pipe.unet.attn_processors) == processors
    remove_concepts(tiny_pipe)  # nothing applied: a no-op


def value_targets_in_use(pipe) -> dict[str, torch.Tensor]:
    """The gated V target (first concept) each PerfusionAttnProcessor applies now."""
    return {
        name.removesuffix(".processor"): proc.o_v[0]
        for name, proc in pipe.unet.attn_processors.items()
        if isinstance(proc, PerfusionAttnProcessor)
    }


def key_targets_in_use(pipe) -> dict[str, torch.Tensor]:
    """The gated K target (first concept) each PerfusionAttnProcessor applies now."""
    return {
        name.removesuffix(".processor"): proc.o_k[0]
        for name, proc in pipe.unet.attn_processors.items()
        if isinstance(proc, PerfusionAttnProcessor)
    }


def test_strength_moves_the_value_from_the_superclass_to_the_trained_one_then_key_and_gate(
    tiny_pipe, fitted
):
    """0 → 0.5: the V target from W_v e_super to o*_V; 0.5 → 1: the key target W_k e_super
    scaled 1 → 1.5 and the gate's β 0.7 → 0.65, the V target staying o*_V."""
    concept = fitted["concept"]
    layers = cross_attention_layers(tiny_pipe.unet)
    superclass = {n: F.linear(concept.e_super, a.to_v.weight) for n, a in layers.items()}
    locked = {n: F.linear(concept.e_super, a.to_k.weight) for n, a in layers.items()}
    halfway = {n: (superclass[n] + concept.o_v[n]) / 2 for n in layers}
    want = {  # strength: (V target, key scale, β)
        0.0: (superclass, 1.0, 0.7),
        0.25: (halfway, 1.0, 0.7),
        0.5: (concept.o_v, 1.0, 0.7),
        0.75: (concept.o_v, 1.25, 0.675),
        1.0: (concept.o_v, 1.5, 0.65),
    }
    for strength, (values, key_scale, beta) in want.items():
        with apply_concepts(tiny_pipe, [concept], [strength_to_control(strength)]) as handle:
            used_v, used_k = value_targets_in_use(tiny_pipe), key_targets_in_use(tiny_pipe)
            assert handle.edit.beta.tolist() == pytest.approx([beta]), strength
            assert handle.edit.tau.tolist() == pytest.approx([0.15]), strength
        assert used_v.keys() == values.keys() == used_k.keys()
        for name in used_v:
            torch.testing.assert_close(used_v[name], values[name], msg=f"V {strength} {name}")
            torch.testing.assert_close(
                used_k[name], key_scale * locked[name], msg=f"K {strength} {name}"
            )
    with pytest.raises(ValueError):
        strength_to_control(1.5)


STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def test_strength_sweep_moves_the_concept_image_monotonically(tiny_pipe, fitted):
    """0 is the superclass, barely personal; each step moves the image further from it."""
    concept = fitted["concept"]
    images = [
        run(tiny_pipe, "a photo of a <sks>", concepts=[concept], controls=[strength_to_control(s)])
        for s in STRENGTHS
    ]
    superclass = run(tiny_pipe, "a photo of a dog")
    away = [float(np.abs(im - images[0]).mean()) for im in images]
    from_superclass = [float(np.abs(im - superclass).mean()) for im in images]
    print(f"mean |image - strength 0| per strength: {[round(a, 2) for a in away]}")
    print(
        f"mean |image - superclass prompt| per strength: {[round(a, 2) for a in from_superclass]}"
    )
    past_default = [float(np.abs(im - images[2]).mean()) for im in images[2:]]
    print(f"mean |image - default strength| from the default up: {past_default}")
    assert all(a < b for a, b in zip(away, away[1:], strict=False)), away
    assert from_superclass[0] < from_superclass[2] < from_superclass[-1]
    # Above the default the concept keeps moving, not saturated at the trained one: measured
    # 0.08/255 at 0.75 and 0.18 at 1 on this tiny model (0.14 at 1 with the key left unscaled,
    # the gate alone: the test above catches that; the toy world's harness measures what the
    # move shows).
    assert 0 < past_default[1] < past_default[2]
    assert past_default[2] >= 0.12


def test_prompts_without_the_concept_barely_change_at_every_strength(tiny_pipe, fitted):
    concept = fitted["concept"]
    for prompt in PROMPTS:
        base = run(tiny_pipe, prompt)
        for strength in STRENGTHS:
            control = [strength_to_control(strength)]
            diff = np.abs(run(tiny_pipe, prompt, concepts=[concept], controls=control) - base)
            assert diff.max() <= MAX_PRIOR_DIFF and diff.mean() <= MEAN_PRIOR_DIFF, strength


def test_two_concepts_and_global_locking(tiny_pipe, tiny_cov, fitted):
    first = fitted["concept"]
    i_star = first.i_star + torch.randn(
        first.i_star.shape, generator=torch.Generator().manual_seed(0)
    )
    score, energy = score_and_energy(i_star, tiny_cov.inverse)
    second = replace(
        first,
        token="<two>",
        superclass="cat",
        i_star=i_star,
        score=score,
        i_star_energy=energy,
        o_v={k: -v for k, v in first.o_v.items()},
        o_k={},
    )
    prompt = "a <sks> and a <two> on grass"
    controls = [ConceptControl(0.7, 0.15), ConceptControl(0.6, 0.2)]
    plain = run(tiny_pipe, prompt, concepts=[first, second], controls=controls)
    locked = run(
        tiny_pipe, prompt, concepts=[first, second], controls=controls, global_locking=True
    )
    assert plain.shape == locked.shape == (16, 16, 3)
    assert not np.array_equal(plain, locked)
    assert getattr(tiny_pipe, "_perfusion_applied", None) is None


def test_generation_cancel_and_step_callback(tiny_pipe, fitted):
    steps = []
    with pytest.raises(GenerationCanceled):
        generate(
            tiny_pipe,
            "a photo of a <sks>",
            [fitted["concept"]],
            steps=4,
            on_step=lambda done, total: steps.append((done, total)),
            should_cancel=lambda: len(steps) >= 2,
        )
    assert steps == [(1, 4), (2, 4)]
    assert "<sks>" not in tiny_pipe.tokenizer.get_vocab()


def test_different_seeds_give_different_images(tiny_pipe):
    a = pixels(generate(tiny_pipe, PROMPTS[0], steps=2, seed=0)[0])
    b = pixels(generate(tiny_pipe, PROMPTS[0], steps=2, seed=1)[0])
    assert not np.array_equal(a, b)
    assert torch.is_grad_enabled()


def test_load_concepts_into_plain_pipeline(tiny_pipe, fitted, tmp_path):
    path = tmp_path / "sks.safetensors"
    save_concept(fitted["concept"], path)
    before = pixels(
        tiny_pipe(
            "a red cat", num_inference_steps=2, generator=torch.Generator().manual_seed(0)
        ).images[0]
    )
    with load_concepts_into(tiny_pipe, path, strength=0.8) as handle:
        assert handle.edit.beta.tolist() == pytest.approx([strength_to_control(0.8).beta])
        tiny_pipe("a <sks> on grass", num_inference_steps=2)
    after = pixels(
        tiny_pipe(
            "a red cat", num_inference_steps=2, generator=torch.Generator().manual_seed(0)
        ).images[0]
    )
    assert np.array_equal(before, after)


def test_edited_keys_and_values_are_computed_once_per_generation(tiny_pipe, fitted, monkeypatch):
    """The text encoding is constant over denoising steps, so the edit is paid for once."""
    import workers.perfusion.processor as processor

    concept = fitted["concept"]
    cached = run(tiny_pipe, "a <sks> on grass", concepts=[concept])
    calls = []
    original_projection = processor.edited_projection
    monkeypatch.setattr(
        processor,
        "edited_projection",
        lambda *args: calls.append(1) or original_projection(*args),
    )
    run(tiny_pipe, "a <sks> on grass", concepts=[concept])
    assert len(calls) == 2 * len(concept.o_v)  # K and V once per layer, not once per step

    original_key_value = PerfusionAttnProcessor._key_value

    def uncached(self, attn, encoder_hidden_states):
        self._cached = None
        return original_key_value(self, attn, encoder_hidden_states)

    monkeypatch.setattr(PerfusionAttnProcessor, "_key_value", uncached)
    assert np.array_equal(run(tiny_pipe, "a <sks> on grass", concepts=[concept]), cached)


def test_applying_the_same_concept_again_reuses_its_tokenizer_copy(tiny_pipe, fitted):
    original = tiny_pipe.tokenizer
    first = apply_concepts(tiny_pipe, [fitted["concept"]])
    patched = tiny_pipe.tokenizer
    first.remove()
    second = apply_concepts(tiny_pipe, [fitted["concept"]])
    assert tiny_pipe.tokenizer is patched and patched is not original
    second.remove()
    assert tiny_pipe.tokenizer is original and "<sks>" not in original.get_vocab()
