"""FitConfig.restarts: n fits with seeds seed .. seed + n - 1, the lowest photo loss kept."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.perfusion.conftest import TINY_FIT, make_images
from tests.unit.perfusion.test_fit import assert_bitwise_equal
from workers.perfusion import FitCheckpoint, concept_from_bytes, concept_to_bytes, fit_concept
from workers.perfusion.photo_loss import photo_loss

RESTARTS = replace(TINY_FIT, steps=4, restarts=3, checkpoint_every=2)


def _tensors(concept) -> dict:  # what the concept file holds (o_k is recomputed on load)
    return {
        "token_embedding": concept.token_embedding,
        "i_star": concept.i_star,
        "score": concept.score,
        **{f"o_v.{k}": v for k, v in concept.o_v.items()},
    }


@pytest.fixture(scope="module")
def restarted(tiny_pipe, tiny_cov) -> dict:
    events, checkpoints = [], []
    concept = fit_concept(
        tiny_pipe, make_images(), "<sks>", "dog", RESTARTS, tiny_cov,
        on_progress=events.append, on_checkpoint=lambda c: checkpoints.append(c.to_bytes()),
    )  # fmt: skip
    return {"concept": concept, "events": events, "checkpoints": checkpoints}


def test_the_fit_with_the_lowest_photo_loss_is_kept(tiny_pipe, tiny_cov, restarted) -> None:
    singles = [
        fit_concept(
            tiny_pipe,
            make_images(),
            "<sks>",
            "dog",
            replace(RESTARTS, restarts=1, seed=RESTARTS.seed + k, checkpoint_every=0),
            tiny_cov,
        )  # fmt: skip
        for k in range(RESTARTS.restarts)
    ]
    losses = [photo_loss(tiny_pipe, c, make_images()) for c in singles]
    assert len(set(losses)) == len(losses), "the seeds give different fits"
    best = min(range(len(losses)), key=losses.__getitem__)
    kept = restarted["concept"]
    assert_bitwise_equal(_tensors(kept), _tensors(singles[best]))
    assert kept.training["restart_photo_losses"] == losses
    assert kept.training["restarts"] == RESTARTS.restarts
    assert kept.training["seed"] == RESTARTS.seed + best


def test_progress_counts_the_steps_of_every_fit(restarted) -> None:
    total = RESTARTS.steps * RESTARTS.restarts
    assert [e.step for e in restarted["events"]] == list(range(1, total + 1))
    assert {e.total for e in restarted["events"]} == {total}
    elapsed = [e.elapsed_s for e in restarted["events"]]
    assert elapsed == sorted(elapsed)


AT = [(0, 2), (0, 4), (1, 2), (1, 4), (2, 2), (2, 4)]  # (fit, step) of each checkpoint


@pytest.mark.parametrize(
    "index", [0, 1, 3, 4]
)  # in the first fit, its end, the second's end, the third
def test_a_fit_resumed_from_any_checkpoint_keeps_the_same_concept(
    tiny_pipe, tiny_cov, restarted, index: int
) -> None:
    checkpoint = FitCheckpoint.from_bytes(restarted["checkpoints"][index])
    assert (checkpoint.restart, checkpoint.step) == AT[index]
    steps = []
    resumed = fit_concept(
        tiny_pipe, make_images(), "<sks>", "dog", RESTARTS, tiny_cov, resume=checkpoint,
        on_progress=lambda p: steps.append(p.step),
    )  # fmt: skip
    done = checkpoint.restart * RESTARTS.steps + checkpoint.step
    assert steps == list(range(done + 1, RESTARTS.steps * RESTARTS.restarts + 1))
    # the file as the studio stores it: the same tensors and metadata (safetensors orders the
    # metadata as a hash map does, so the bytes themselves are not compared)
    again, first = (
        concept_from_bytes(concept_to_bytes(c)) for c in (resumed, restarted["concept"])
    )
    assert_bitwise_equal(_tensors(again), _tensors(first))
    assert again.training == first.training
    assert_bitwise_equal(_tensors(resumed), _tensors(restarted["concept"]))


def test_a_checkpoint_carries_the_best_finished_fit(tiny_pipe, restarted) -> None:
    late = FitCheckpoint.from_bytes(restarted["checkpoints"][-1])
    assert len(restarted["checkpoints"]) == len(AT)
    assert late.restart == RESTARTS.restarts - 1
    assert late.kept is not None and len(late.restart_losses) == RESTARTS.restarts - 1
    kept_loss = photo_loss(tiny_pipe, late.kept, make_images())
    assert kept_loss == min(late.restart_losses)
    early = FitCheckpoint.from_bytes(restarted["checkpoints"][0])
    assert early.kept is None and early.restart_losses == []


def test_restarts_must_be_at_least_one(tiny_pipe, tiny_cov) -> None:
    with pytest.raises(ValueError, match="restarts must be >= 1"):
        fit_concept(
            tiny_pipe, make_images(), "<sks>", "dog", replace(TINY_FIT, restarts=0), tiny_cov
        )
