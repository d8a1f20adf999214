"""The fit's speed options change how a step runs, not what it learns.

channels_last and fused AdamW agree with the default to float32 rounding; bf16 frozen weights
to bf16's precision, with the concept still open (s ≈ 1) on the base model in fp32. Each
leaves the pipeline bit-exactly as it was and resumes exactly.
"""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.unit.perfusion.conftest import (
    CAPTIONS,
    TINY_FIT,
    make_images,
    make_tiny_pipeline,
    state_snapshot,
)
from tests.unit.perfusion.test_fit import assert_bitwise_equal, concept_tensors
from workers.perfusion import FitCheckpoint, apply_concepts, compute_covariance, fit_concept
from workers.perfusion.fit import TEMPLATES


def _fit(pipe, cov, **options):  # type: ignore[no-untyped-def]
    losses: list[float] = []
    config = replace(TINY_FIT, **options)
    concept = fit_concept(
        pipe,
        make_images(),
        "<fast>",
        "dog",
        config,
        cov,
        on_progress=lambda p: losses.append(p.loss),
    )
    return concept, losses


@pytest.fixture(scope="module")
def baseline(tiny_pipe, tiny_cov):  # type: ignore[no-untyped-def]
    return _fit(tiny_pipe, tiny_cov)


def _assert_restored(pipe, before) -> None:  # type: ignore[no-untyped-def]
    assert_bitwise_equal(state_snapshot(pipe), before)
    for name, tensor in pipe.unet.state_dict().items():
        assert tensor.is_contiguous(), f"{name} keeps the channels-last layout"


@pytest.mark.parametrize("option", [{"channels_last": True}, {"fused_adamw": True}])
def test_layout_and_fused_optimiser_agree_with_the_default(tiny_pipe, tiny_cov, baseline, option):
    before = state_snapshot(tiny_pipe)
    concept, losses = _fit(tiny_pipe, tiny_cov, **option)
    _assert_restored(tiny_pipe, before)
    want, want_losses = baseline
    assert losses == pytest.approx(want_losses, rel=1e-5)
    for name, tensor in concept_tensors(concept).items():
        expected = concept_tensors(want)[name]
        scale = float(expected.abs().max())
        torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-4 * scale, msg=name)
    assert "channels_last" not in concept.training and "fused_adamw" not in concept.training


def _gate_scores(pipe, concept) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """s(e) of the concept token in every training template, on the pipeline as it is."""
    with apply_concepts(pipe, [concept]), torch.no_grad():
        tokens = pipe.tokenizer(
            [t.format(concept.token) for t in TEMPLATES],
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids
        encodings = pipe.text_encoder(tokens)[0].float()
        token_id = pipe.tokenizer.convert_tokens_to_ids(concept.token)
        return encodings[tokens == token_id] @ concept.score


def test_bf16_frozen_weights_learn_the_same_concept(tiny_pipe, tiny_cov, baseline):
    before = state_snapshot(tiny_pipe)
    concept, losses = _fit(tiny_pipe, tiny_cov, frozen_dtype="bf16")
    _assert_restored(tiny_pipe, before)
    _, want_losses = baseline
    assert losses == pytest.approx(want_losses, rel=1e-2)
    scores = _gate_scores(tiny_pipe, concept)  # the fp32 base model, as generation sees it
    print(f"s on the templates after a bf16 fit: {[round(s, 4) for s in scores.tolist()]}")
    assert (scores - 1).abs().max() < 0.02
    assert concept.training["frozen_dtype"] == "bf16"


def test_bf16_frozen_weights_of_an_fp16_pipeline_come_back_bit_exact(tmp_path: Path, monkeypatch):
    """Production's fp16 pipeline, bf16 for the fit (lossy both ways): the fp16 originals are
    kept and put back, not converted back; no fp16 tensor in the gradient path."""
    import workers.perfusion.fit as fit

    pipe = make_tiny_pipeline(tmp_path).to(torch.float16)
    cov = compute_covariance(pipe, CAPTIONS)
    before = state_snapshot(pipe)
    monkeypatch.setattr(fit, "bf16_autocast_supported", lambda device: True)
    saved: set[torch.dtype] = set()
    micro_step = fit._micro_step

    def spy_step(*args):  # type: ignore[no-untyped-def]
        def pack(tensor):  # type: ignore[no-untyped-def]
            saved.add(tensor.dtype)
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            return micro_step(*args)

    monkeypatch.setattr(fit, "_micro_step", spy_step)
    config = replace(TINY_FIT, steps=2, frozen_dtype="bf16", channels_last=True)
    fit_concept(pipe, make_images(), "<h>", "dog", config, cov)
    assert torch.float16 not in saved and torch.bfloat16 in saved
    assert_bitwise_equal(state_snapshot(pipe), before)


def test_fast_options_resume_exactly(tiny_pipe, tiny_cov):
    config = replace(TINY_FIT, checkpoint_every=3, channels_last=True, fused_adamw=True)
    checkpoints: list[bytes] = []
    whole = fit_concept(
        tiny_pipe,
        make_images(),
        "<fast>",
        "dog",
        config,
        tiny_cov,
        on_checkpoint=lambda c: checkpoints.append(c.to_bytes()),
    )
    resumed = fit_concept(
        tiny_pipe,
        make_images(),
        "<fast>",
        "dog",
        config,
        tiny_cov,
        resume=FitCheckpoint.from_bytes(checkpoints[0]),
    )
    assert_bitwise_equal(concept_tensors(resumed), concept_tensors(whole))


def test_unknown_frozen_dtype_is_refused(tiny_pipe, tiny_cov):
    with pytest.raises(ValueError, match="frozen_dtype"):
        _fit(tiny_pipe, tiny_cov, frozen_dtype="fp8")
