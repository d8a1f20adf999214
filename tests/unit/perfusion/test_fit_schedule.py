"""Learning-rate warm-up/decay and early stopping: options, off by default, resumable."""

from dataclasses import replace

import pytest

from tests.unit.perfusion.conftest import TINY_FIT, make_images
from tests.unit.perfusion.test_fit import assert_bitwise_equal, concept_tensors
from workers.perfusion import FitCheckpoint, fit_concept
from workers.perfusion.fit import FitConfig, lr_factor


def test_the_default_schedule_is_constant():
    config = FitConfig(steps=10)
    assert [lr_factor(config, k) for k in range(10)] == [1.0] * 10


def test_warm_up_ramps_then_cosine_decays_to_the_floor():
    config = FitConfig(steps=10, lr_warmup_steps=4, lr_decay="cosine", lr_min_ratio=0.1)
    factors = [lr_factor(config, k) for k in range(10)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(factors[4:], factors[5:], strict=False))


def test_a_scheduled_fit_differs_and_resumes_exactly(tiny_pipe, tiny_cov, fitted):
    config = replace(TINY_FIT, lr_warmup_steps=2, lr_decay="cosine", checkpoint_every=3)
    checkpoints: list[bytes] = []
    whole = fit_concept(
        tiny_pipe,
        make_images(),
        "<sks>",
        "dog",
        config,
        tiny_cov,
        on_checkpoint=lambda c: checkpoints.append(c.to_bytes()),
    )
    assert not concept_tensors(whole)["token_embedding"].equal(
        concept_tensors(fitted["concept"])["token_embedding"]
    )
    assert whole.training["lr_decay"] == "cosine"
    resumed = fit_concept(
        tiny_pipe,
        make_images(),
        "<sks>",
        "dog",
        config,
        tiny_cov,
        resume=FitCheckpoint.from_bytes(checkpoints[0]),
    )
    assert_bitwise_equal(concept_tensors(resumed), concept_tensors(whole))


def test_early_stop_ends_the_fit_when_the_targets_stop_moving(tiny_pipe, tiny_cov):
    """Windows of 2 steps: checked after steps 4, 6, ... (step 2 sets the reference), read a
    step later. Any movement is below a tolerance of 10, none below 1e-12."""
    events: list[int] = []
    config = replace(TINY_FIT, steps=10, early_stop_tol=10.0, early_stop_window=2)
    concept = fit_concept(
        tiny_pipe,
        make_images(),
        "<stop>",
        "dog",
        config,
        tiny_cov,
        on_progress=lambda p: events.append(p.step),
    )
    assert events == [1, 2, 3, 4, 5] and concept.training["stopped_at"] == 5
    config = replace(config, early_stop_tol=1e-12)
    concept = fit_concept(tiny_pipe, make_images(), "<stop>", "dog", config, tiny_cov)
    assert "stopped_at" not in concept.training


def test_unknown_decay_is_refused(tiny_pipe, tiny_cov):
    with pytest.raises(ValueError, match="lr_decay"):
        fit_concept(
            tiny_pipe,
            make_images(),
            "<x>",
            "dog",
            replace(TINY_FIT, lr_decay="step"),
            tiny_cov,
        )
