"""photo_loss scores concepts on the same draws: repeatable, and moved by what
the concept holds (so two fits' scores compare)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from tests.unit.perfusion.conftest import CAPTIONS, TINY_FIT, make_images, make_tiny_pipeline
from workers.perfusion import compute_covariance, fit_concept
from workers.perfusion.photo_loss import photo_loss


def test_the_same_concept_scores_the_same_and_another_value_scores_otherwise(
    tmp_path: Path,
) -> None:
    pipe = make_tiny_pipeline(tmp_path)
    images = make_images()
    concept = fit_concept(
        pipe, images, "<sks>", "dog", TINY_FIT, compute_covariance(pipe, CAPTIONS)
    )
    first = photo_loss(pipe, concept, images, strength=1.0, draws=8)
    assert photo_loss(pipe, concept, images, strength=1.0, draws=8) == first
    assert getattr(pipe, "_perfusion_applied", None) is None  # the pipeline is left as it was
    moved = dataclasses.replace(
        concept, o_v={k: v + 5 * torch.randn_like(v) for k, v in concept.o_v.items()}
    )
    assert photo_loss(pipe, moved, images, strength=1.0, draws=8) != first
    assert photo_loss(pipe, concept, images, strength=1.0, draws=8, seed=7) != first


def test_every_draw_edits_the_prompts_real_tokens_only(tmp_path: Path) -> None:
    """Ten templates encoded up front overflowed the edit's memory of recent encodings, and
    two of them reached the UNet edited at every position (a warning said so)."""
    import warnings

    pipe = make_tiny_pipeline(tmp_path)
    images = make_images()
    concept = fit_concept(
        pipe, images, "<sks>", "dog", TINY_FIT, compute_covariance(pipe, CAPTIONS)
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Perfusion: text encodings not produced")
        photo_loss(pipe, concept, images, strength=1.0, draws=20)
