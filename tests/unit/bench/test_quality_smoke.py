"""The quality harness runs end to end on a tiny random pipeline (2 steps per recipe).

No timing asserts: this proves the machinery (fits, generation, scoring, tables) works.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from bench.quality import ENTRY_LABELS, Settings, full_recipes, run_quality
from tests.unit.perfusion.conftest import make_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("tiny-model")
    make_tiny_pipeline(tmp_path_factory.mktemp("tiny-tokenizer")).save_pretrained(folder)
    return str(folder)


def test_quality_harness_runs_every_recipe(tiny_model: str) -> None:
    recipes = {
        k: dataclasses.replace(r, steps=2, batch_size=1, class_images=1)
        for k, r in full_recipes().items()
    }
    settings = Settings(
        model=tiny_model,
        subjects=["candy"],
        recipes=recipes,
        n_photos=2,
        test_backgrounds=1,
        n_eval=1,
        n_drift=1,
        n_sweep=1,
        sweep=(0.0, 0.5, 1.0),
        gen_steps=2,
        covariance_captions=50,
    )
    report = run_quality(settings, isolate=False)

    methods = [r.method for r in report.rows if r.method]
    assert methods == list(full_recipes())
    assert [r.label for r in report.rows if r.method is None] == [
        "Reference: new photos, unseen backgrounds",
        "Reference: VAE round trip of those photos (ceiling)",
        "Reference: best words-only prompt (base model)",
        "Reference: base model, superclass prompt",
    ]
    assert report.row("Reference: new photos").hit_rate == 1.0  # the reader reads renders
    for row in report.rows:
        if row.method is None:
            continue
        numbers = [
            row.concept_fidelity, row.prompt_fidelity, row.drift_superclass, row.drift_other,
            row.fit_s,
        ]  # fmt: skip
        assert all(math.isfinite(x) for x in numbers), row
        assert 0.0 <= row.hit_rate <= 1.0 and 0.0 <= row.prompt_fidelity <= 1.0
        assert min(row.drift_superclass, row.drift_other) >= 0.0 and row.artefact_bytes > 0
    text = report.render()
    for method in full_recipes():
        assert ENTRY_LABELS[method] in text
    assert "against its promises" in text
    assert [s["strength"] for s in report.sweep] == [0.0, 0.5, 1.0]
    assert all(math.isfinite(s["hit_rate"]) for s in report.sweep)
    # Textual Inversion only adds a token: prompts without it are exactly unchanged.
    ti = report.row("textual_inversion")
    assert ti.drift_superclass == 0.0 and ti.drift_other == 0.0
