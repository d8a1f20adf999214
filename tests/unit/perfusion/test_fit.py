"""Fitting trains exactly the token row and o*_V, deterministically and resumably."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.unit.perfusion.conftest import (
    CAPTIONS,
    TINY_FIT,
    make_images,
    make_tiny_pipeline,
    state_snapshot,
)
from workers.perfusion import (
    FitCanceled,
    FitCheckpoint,
    compute_covariance,
    fit_concept,
)
from workers.perfusion.apply import key_target
from workers.perfusion.fit import superclass_vectors
from workers.perfusion.pipeline import cross_attention_layers


def concept_tensors(concept):
    out = {
        "token_embedding": concept.token_embedding,
        "i_star": concept.i_star,
        "score": concept.score,
    }
    out.update({f"o_v.{k}": v for k, v in concept.o_v.items()})
    out.update({f"o_k.{k}": v for k, v in concept.o_k.items()})
    return out


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_fit_changes_only_the_token_row_and_value_targets(tiny_pipe, fitted):
    concept = fitted["concept"]
    assert_bitwise_equal(state_snapshot(tiny_pipe), fitted["before"])  # every base weight
    assert dict(tiny_pipe.unet.attn_processors) == fitted["processors"]
    assert "<sks>" not in tiny_pipe.tokenizer.get_vocab()
    embed_init, e_super = superclass_vectors(tiny_pipe, "dog")
    layers = cross_attention_layers(tiny_pipe.unet)
    for name, attn in layers.items():
        assert torch.equal(concept.o_k[name], key_target(attn, e_super)), "o*_K is locked"
        init_v = torch.nn.functional.linear(e_super, attn.to_v.weight)
        assert (concept.o_v[name] - init_v).abs().max() > 1e-3, "o*_V must be trained"
    assert (concept.token_embedding - embed_init).abs().max() > 1e-4
    assert torch.equal(concept.e_super, e_super)
    assert (concept.i_star - e_super).abs().max() > 0, "i* follows the EMA"


def test_same_seed_gives_bitwise_equal_fits(tiny_pipe, tiny_cov, fitted):
    again = fit_concept(tiny_pipe, make_images(), "<sks>", "dog", fitted["config"], tiny_cov)
    assert_bitwise_equal(concept_tensors(again), concept_tensors(fitted["concept"]))


def test_resume_from_checkpoint_equals_uninterrupted_run(tiny_pipe, tiny_cov, fitted):
    assert len(fitted["checkpoints"]) == 2  # after steps 3 and 6
    checkpoint = FitCheckpoint.from_bytes(fitted["checkpoints"][0])
    assert checkpoint.step == 3
    steps = []
    resumed = fit_concept(
        tiny_pipe,
        make_images(),
        "<sks>",
        "dog",
        fitted["config"],
        tiny_cov,
        resume=checkpoint,
        on_progress=lambda p: steps.append(p.step),
    )
    assert steps == [4, 5, 6]
    assert_bitwise_equal(concept_tensors(resumed), concept_tensors(fitted["concept"]))


def test_cancel_raises_and_restores_the_pipeline(tiny_pipe, tiny_cov):
    processors = dict(tiny_pipe.unet.attn_processors)
    calls = []
    with pytest.raises(FitCanceled):
        fit_concept(
            tiny_pipe,
            make_images(),
            "<sks>",
            "dog",
            TINY_FIT,
            tiny_cov,
            should_cancel=lambda: len(calls) >= 2,
            on_progress=calls.append,
        )
    assert len(calls) == 2
    assert dict(tiny_pipe.unet.attn_processors) == processors
    assert "<sks>" not in tiny_pipe.tokenizer.get_vocab()


def test_progress_reports_eta_and_preview(tiny_pipe, tiny_cov):
    events = []
    config = replace(TINY_FIT, steps=2, preview_every=2, preview_steps=2)
    fit_concept(
        tiny_pipe, make_images(1), "<p>", "cat", config, tiny_cov, on_progress=events.append
    )
    assert [e.step for e in events] == [1, 2]
    assert events[0].total == 2 and events[0].eta_s >= 0 and events[0].preview is None
    assert events[1].preview is not None and events[1].preview.size == (16, 16)


def test_loss_falls_over_a_short_fit(tmp_path: Path):
    # A random UNet barely uses cross-attention; amplify that path (and the output) so the
    # trainable targets can move the loss within 24 steps. Fixed seed: no flakiness.
    pipe = make_tiny_pipeline(tmp_path)
    with torch.no_grad():
        for attn in cross_attention_layers(pipe.unet).values():
            attn.to_out[0].weight.mul_(4)
        pipe.unet.conv_out.weight.mul_(4)
    cov = compute_covariance(pipe, CAPTIONS)
    losses = []
    config = replace(TINY_FIT, steps=24, flip_p=0.0)
    fit_concept(
        pipe,
        make_images(1),
        "<sks>",
        "dog",
        config,
        cov,
        on_progress=lambda p: losses.append(p.loss),
    )
    first, last = np.mean(losses[:6]), np.mean(losses[-6:])
    print(f"loss first 6 steps {first:.4f}, last 6 steps {last:.4f}")
    assert last < first - 0.05


def test_soft_masks_weight_the_loss(tiny_pipe, tiny_cov):
    config = replace(TINY_FIT, steps=2)
    images = make_images(1)
    full = Image.new("L", (16, 16), 255)
    centre = Image.new("L", (16, 16), 0)
    centre.paste(255, (4, 4, 12, 12))
    runs = {}
    for name, masks in (("none", None), ("full", [full]), ("centre", [centre])):
        losses = []
        fit_concept(
            tiny_pipe,
            images,
            "<m>",
            "dog",
            config,
            tiny_cov,
            masks=masks,
            on_progress=lambda p, out=losses: out.append(p.loss),
        )
        runs[name] = losses
    assert runs["full"] == pytest.approx(runs["none"], rel=1e-5)  # uniform mask = plain MSE
    assert runs["centre"] != pytest.approx(runs["none"], rel=1e-3)


@pytest.mark.parametrize("superclass", ["dog", "teddy bear"])  # 1 token; 7 byte-level tokens
def test_training_gate_on_the_concept_token_is_open_from_the_first_step(
    tiny_pipe, tiny_cov, monkeypatch, superclass
):
    """s(e) ~ 1 on the concept token at step 0 (i* = its own encoding), whatever the superclass."""
    import workers.perfusion.fit as fit

    assert len(tiny_pipe.tokenizer(superclass, add_special_tokens=False).input_ids) == (
        1 if superclass == "dog" else 7
    )
    edits, gates = [], []
    install, micro_step = fit.install_processors, fit._micro_step

    def spy_install(unet, edit, *args):
        edits.append(edit)
        return install(unet, edit, *args)

    def spy_step(*args):
        loss, encodings = micro_step(*args)
        edit = edits[-1]
        s = encodings @ edit.score[:, 0]
        gates.append(torch.sigmoid((s - edit.beta[0]) / edit.tau[0]))
        return loss, encodings

    monkeypatch.setattr(fit, "install_processors", spy_install)
    monkeypatch.setattr(fit, "_micro_step", spy_step)
    config = replace(TINY_FIT, steps=4)
    fit_concept(tiny_pipe, make_images(), "<gate>", superclass, config, tiny_cov)
    assert len(gates) == 4
    first = gates[0]
    print(f"{superclass!r}: step-1 gates {[round(g, 3) for g in first.tolist()]}")
    assert first.min() > 0.5, "the training gate must be open on the concept token at step 0"
    print(f"lowest gate per step {[round(float(g.min()), 3) for g in gates]}")
    assert torch.cat(gates).min() > 0.5, "and it stays open while the fit runs"


def test_fp16_pipeline_fits_without_fp16_in_the_gradient_path(tmp_path: Path, monkeypatch):
    """Production loads fp16 on CUDA and fits under bf16 autocast; on the CPU the same path
    runs with the device check forced. No tensor kept for backward may be fp16 (no gradient
    scaling: small gradients would flush to zero), and the fp16 weights come back bit-exact."""
    import workers.perfusion.fit as fit

    pipe = make_tiny_pipeline(tmp_path).to(torch.float16)
    cov = compute_covariance(pipe, CAPTIONS)
    before = state_snapshot(pipe)
    monkeypatch.setattr(fit, "bf16_autocast_supported", lambda device: True, raising=False)
    saved: set[torch.dtype] = set()
    micro_step = fit._micro_step

    def spy_step(*args):
        def pack(tensor):
            saved.add(tensor.dtype)
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            return micro_step(*args)

    monkeypatch.setattr(fit, "_micro_step", spy_step)
    config = replace(TINY_FIT, steps=2, preview_every=2, preview_steps=1)
    previews = []
    concept = fit_concept(
        pipe, make_images(), "<h>", "dog", config, cov, on_progress=lambda p: previews.append(p)
    )
    assert torch.bfloat16 in saved, "bf16 autocast ran"
    assert torch.float16 not in saved, f"fp16 tensors in the gradient path: {saved}"
    assert_bitwise_equal(state_snapshot(pipe), before)
    assert {t.dtype for t in before.values() if t.is_floating_point()} == {torch.float16}
    assert previews[-1].preview is not None
    embed_init, _ = superclass_vectors(pipe, "dog")
    assert (concept.token_embedding - embed_init).abs().max() > 1e-4
    assert concept.training["mixed_precision"] is True


def test_o_k_is_locked_although_the_loss_depends_on_it(tiny_pipe, tiny_cov, monkeypatch):
    """o*_K gets a gradient (gate open: a trained o*_K would move), yet stays W_k e_super."""
    import workers.perfusion.fit as fit

    keys: list[dict[str, torch.Tensor]] = []
    install = fit.install_processors

    def spy_install(unet, edit, o_k, *args):
        for tensor in o_k.values():
            tensor.requires_grad_(True)  # only to observe its gradient; no optimiser sees it
        keys.append({n: t.detach().clone() for n, t in o_k.items()})
        keys.append(o_k)
        return install(unet, edit, o_k, *args)

    monkeypatch.setattr(fit, "install_processors", spy_install)
    concept = fit_concept(tiny_pipe, make_images(), "<k>", "dog", TINY_FIT, tiny_cov)
    start, live = keys
    _, e_super = superclass_vectors(tiny_pipe, "dog")
    for name, attn in cross_attention_layers(tiny_pipe.unet).items():
        assert live[name].grad is not None and live[name].grad.abs().max() > 0, name
        assert torch.equal(live[name].detach(), start[name])
        assert torch.equal(concept.o_k[name], start[name][0])
        assert torch.equal(concept.o_k[name], key_target(attn, e_super))


def test_least_p_norm_point_matches_least_squares_also_when_templates_coincide():
    """The fit's sync-free solve finds lstsq's point, with s = 1 on every row, also when two
    rows are equal (a singular Gram matrix)."""
    from workers.perfusion.fit import least_p_norm_point

    g = torch.Generator().manual_seed(0)
    d = 16
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    cinv = (a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)).float()
    rows = torch.randn(6, d, generator=g) + 3.0
    for case in (rows, torch.cat([rows, rows[2:3]])):
        r, p = case.double(), cinv.double()
        spread = r[1:] - r[:1]
        coeffs = torch.linalg.lstsq(spread @ p @ spread.T, -(spread @ p @ r[0])).solution
        want = (r[0] + coeffs @ spread).float()
        got = least_p_norm_point(case, cinv)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        s = (case.double() @ p @ got.double()) / (got.double() @ p @ got.double())
        torch.testing.assert_close(s, torch.ones_like(s), rtol=0, atol=1e-6)


def test_the_per_step_refresh_equals_building_the_edit_afresh(tiny_cov):
    """`_refresh` (on the device, no host reads) gives make_text_edit's tensors bit for bit."""
    from workers.perfusion.fit import _refresh
    from workers.perfusion.processor import make_text_edit, score_and_energy

    cinv = tiny_cov.inverse.float()
    g = torch.Generator().manual_seed(1)
    start, moved = torch.randn(2, cinv.shape[0], generator=g)
    score, energy = score_and_energy(start, cinv)
    edit = make_text_edit(start[None], score[None], torch.tensor([energy]), [0.75], [0.1])
    _refresh(edit, moved, cinv)
    score, energy = score_and_energy(moved, cinv)
    want = make_text_edit(moved[None], score[None], torch.tensor([energy]), [0.75], [0.1])
    for name in ("basis", "proj", "score", "beta", "tau"):
        assert torch.equal(getattr(edit, name), getattr(want, name)), name


def test_a_checkpoint_from_another_device_resumes_on_a_fresh_stream(tiny_pipe, tiny_cov, fitted):
    """An older checkpoint (its generator always on the CPU) or one from another device type
    continues, not bit-exactly, with a warning."""
    checkpoint = FitCheckpoint.from_bytes(fitted["checkpoints"][0])
    assert checkpoint.rng_device == "cpu"
    checkpoint.rng_device = "cuda"
    again = FitCheckpoint.from_bytes(checkpoint.to_bytes())
    assert again.rng_device == "cuda"
    with pytest.warns(UserWarning, match="fresh random stream"):
        resumed = fit_concept(
            tiny_pipe, make_images(), "<sks>", "dog", fitted["config"], tiny_cov, resume=again
        )
    assert not torch.equal(resumed.token_embedding, fitted["concept"].token_embedding)


def test_a_throttled_fit_resumes_exactly_and_learns_what_an_unthrottled_one_does(
    tiny_pipe, tiny_cov
):
    """Progress points ~2 a second (the default) change when losses are read, not what the
    fit computes: with accumulation and a checkpoint between points, the resumed fit, the
    uninterrupted one and one reporting every step agree bit for bit, losses included."""
    config = replace(TINY_FIT, steps=7, grad_accum=2, checkpoint_every=3, progress_interval_s=2.5)

    def run(config, resume=None):  # every read of the fit's clock advances it 0.5 s
        now, events, checkpoints = [0.0], [], []

        def clock() -> float:
            now[0] += 0.5
            return now[0]

        concept = fit_concept(
            tiny_pipe,
            make_images(),
            "<sks>",
            "dog",
            config,
            tiny_cov,
            on_progress=events.append,
            should_cancel=lambda: False,
            on_checkpoint=checkpoints.append,
            resume=resume,
            clock=clock,
        )
        return concept, events, checkpoints

    every_step, events_all, _ = run(replace(config, progress_interval_s=0.0))
    throttled, events, checkpoints = run(config)
    assert len(events_all) == 7 and len(events) < 7
    assert [c.step for c in checkpoints] == [3, 6]
    resumed, _, again = run(config, resume=FitCheckpoint.from_bytes(checkpoints[0].to_bytes()))
    for concept in (throttled, resumed):
        assert_bitwise_equal(concept_tensors(concept), concept_tensors(every_step))
        assert concept.training["final_loss"] == every_step.training["final_loss"]
    assert checkpoints[1].losses == again[0].losses == [e.loss for e in events_all[:6]]
    assert torch.equal(checkpoints[1].rng_state, again[0].rng_state)


def test_stratified_timesteps_put_one_draw_in_each_slice_of_the_schedule():
    from workers.perfusion.training_data import draw_timesteps

    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        t = draw_timesteps("stratified", 4, 1000, generator, torch.device("cpu"))
        assert t.dtype == torch.long
        assert (t // 250).tolist() == [0, 1, 2, 3]
    uniform = torch.stack(
        [draw_timesteps("uniform", 4, 1000, generator, torch.device("cpu")) for _ in range(50)]
    )
    assert not all(sorted((row // 250).tolist()) == [0, 1, 2, 3] for row in uniform)
    with pytest.raises(ValueError, match="uniform or stratified"):
        draw_timesteps("sorted", 4, 1000, generator, torch.device("cpu"))


def test_an_unknown_timestep_sampling_is_refused_before_the_fit_starts(tiny_pipe, tiny_cov):
    config = replace(TINY_FIT, timesteps="sorted")
    with pytest.raises(ValueError, match="timesteps must be one of"):
        fit_concept(tiny_pipe, make_images(), "<s>", "dog", config, tiny_cov)


def test_a_stratified_fit_resumes_exactly(tiny_pipe, tiny_cov):
    config = replace(TINY_FIT, timesteps="stratified", checkpoint_every=2)
    images = make_images()
    saved: list[FitCheckpoint] = []
    whole = fit_concept(
        tiny_pipe, images, "<s>", "dog", config, tiny_cov, on_checkpoint=saved.append
    )
    resumed = fit_concept(tiny_pipe, images, "<s>", "dog", config, tiny_cov, resume=saved[0])
    assert saved[0].step == 2
    assert_bitwise_equal(concept_tensors(whole), concept_tensors(resumed))


def test_the_separation_term_moves_i_star_off_the_superclass(tiny_pipe, tiny_cov):
    """The term is the squared P-cosine to e_super, and a fit with it ends with a smaller
    s(e_super) than the same fit without it."""
    from workers.perfusion.fit import _superclass_cosine

    cinv = tiny_cov.inverse.float()
    _, e_super = superclass_vectors(tiny_pipe, "dog")
    p_super = cinv @ e_super
    direction = p_super / (e_super @ p_super).sqrt()
    other = torch.randn(e_super.shape, generator=torch.Generator().manual_seed(0))
    other = other - (other @ p_super) / (e_super @ p_super) * e_super  # P-orthogonal to e_super
    cosines = [float(_superclass_cosine(v[None], cinv, direction)) for v in (3 * e_super, other)]
    assert cosines == pytest.approx([1.0, 0.0], abs=1e-4)

    config = replace(TINY_FIT, steps=12)
    scores = {}
    for weight in (0.0, 10.0):
        concept = fit_concept(
            tiny_pipe, make_images(), "<sep>", "dog", replace(config, separation=weight), tiny_cov
        )
        scores[weight] = float(concept.e_super @ concept.score)
    print(f"s(e_super) after 12 steps: without {scores[0.0]:.3f}, with {scores[10.0]:.3f}")
    assert abs(scores[10.0]) < 0.5 * abs(scores[0.0])
