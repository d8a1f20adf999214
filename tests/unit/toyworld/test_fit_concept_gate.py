"""On the bundled toy world, the fitted concept's gate is open where it will be used.

Perfusion's gate σ((s(e) − β)/τ) only lets the learned value target through where the concept
token's encoding e scores s ≈ 1 against i*. The re-implementations' EMA of i* lags a short fit
and leaves s off 1 on the very templates it was trained on (on world 2's two-layer text encoder
below 0.9, shutting the gate; on world 3's one-layer encoder up to 1.31, an overshoot that
scales the key edit past what was fitted); tracking i* exactly (the fit's default) keeps it at 1.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from workers.perfusion import FitConfig, fit_concept, get_covariance, load_pipeline
from workers.toyworld.evaluate import MODEL_DIR
from workers.toyworld.world import Look, Scene, render, sample_placement

SUBJECT = "purple-star"
LOOK, SUPERCLASS = Look("star", "purple"), "star"
FIT = FitConfig(steps=40, batch_size=4, grad_accum=1, flip_p=0.0, seed=0)


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(2)
    return load_pipeline(str(MODEL_DIR), "cpu")


def _photos() -> list:
    rng = random.Random(0)
    return [render(Scene(LOOK, ("gray", "white")[k % 2], *sample_placement(rng))) for k in range(4)]


@pytest.mark.parametrize("tracking", ["exact", "ema"])
def test_the_concept_gate_is_open_after_a_short_fit(pipe, tmp_path, tracking: str) -> None:
    """s(e) of the fitted token on its own training templates stays ≈ 1 (gate open) when i*
    tracks the token exactly; the re-implementations' EMA lags a short fit and moves s off 1."""
    from workers.perfusion import apply_concepts
    from workers.perfusion.pipeline import encode_ids, tokenize
    from workers.perfusion.training_data import TEMPLATES

    images = _photos()
    config = dataclasses.replace(FIT, i_star_tracking=tracking)
    concept = fit_concept(
        pipe, images, f"<{SUBJECT}>", SUPERCLASS, config,
        get_covariance(pipe, cache_dir=tmp_path),
    )  # fmt: skip
    applied = apply_concepts(pipe, [concept])
    try:
        prompts = [t.format(f"<{SUBJECT}>") for t in TEMPLATES]
        token_id = pipe.tokenizer.convert_tokens_to_ids(f"<{SUBJECT}>")
        with torch.no_grad():
            ids, _ = tokenize(pipe, prompts)
            encodings = encode_ids(pipe, ids).float()
        scores = [
            float(e[row == token_id][0] @ concept.score.float())
            for row, e in zip(ids, encodings, strict=True)
        ]
    finally:
        applied.remove()
    print(f"{tracking}: s on the training templates {min(scores):.3f}..{max(scores):.3f}")
    within = min(scores) > 0.95 and max(scores) < 1.05
    if tracking == "exact":
        assert within
    else:  # the defect the exact tracking fixes, measured so it stays visible
        assert not within
