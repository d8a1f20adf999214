"""Quality harness: Perfusion vs LoRA, DreamBooth and Textual Inversion on held-out subjects.

    python -m bench.quality [--quick] [--subjects harness|final|known] [--threads 1]

Each subject is a toy-world look the base model can draw but never drew as such, and no
caption can name (its second colour is never in words). Each method is fitted on 4 photos of
it on two training backgrounds, then asked for it on backgrounds it was never shown with.
Reference rows bound the scale: new photos, their VAE round trip (the ceiling of any method),
the best words-only prompt and the base model's superclass prompt. See `settings` for what
runs, `worker` for how, `metrics` for the scores and `report` for the tables and claims.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench import fidelity
from bench.methods import LABELS
from bench.quality import metrics
from bench.quality.metrics import mean
from bench.quality.report import QualityReport, Row
from bench.quality.settings import (
    DEFAULT_STRENGTH,
    Settings,
    backgrounds,
    drift_prompts,
    full_recipes,
    method_family,
    photos,
    quick_settings,
    subject,
    sweep_method,
)
from bench.quality.worker import run_isolated, run_worker

__all__ = [
    "ENTRY_LABELS",
    "QualityReport",
    "Row",
    "Settings",
    "full_recipes",
    "quick_settings",
    "run_quality",
]

ENTRY_LABELS = {
    **LABELS,
    "perfusion_masked": "Perfusion, masked loss",
    "perfusion_400": "Perfusion, production budget",
    "perfusion_best2": "Perfusion, best of 2 fits",
    "perfusion_b16": "Perfusion, batch 16 (the studio's fit here)",
    "lora_b16": "LoRA, batch 16",
}


def run_quality(
    settings: Settings, isolate: bool = True, workdir: Path | None = None
) -> QualityReport:
    """Run the base model and every recipe, and score them; `isolate` = a subprocess each."""
    started = time.perf_counter()
    import bench.methods  # noqa: F401  heavy imports once, before forking the workers
    import workers.toyworld.reader  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        out = Path(workdir or tmp)
        results = {}
        for method in ("base", *settings.recipes):
            run = run_isolated if isolate else run_worker
            results[method] = run(method, settings, out)
        report = score(settings, results, isolate)
    report.wall_s = time.perf_counter() - started
    return report


def _reference_rows(settings: Settings, base: dict, refs: dict) -> list[Row]:
    names = settings.subjects
    real, round_trip = {}, {}
    for n in names:
        _, test_bgs = backgrounds(n, settings.test_backgrounds)
        real[n] = {}
        for k, bg in enumerate(test_bgs):
            images, _ = photos(n, settings.n_eval, settings.seed + 1 + k, (bg,))
            real[n][bg] = images
        round_trip[n] = base[n]["round_trip"]

    def real_hits(n: str) -> float:
        from workers.toyworld.reader import read_attributes

        look = subject(n).look
        return mean(read_attributes(im).matches(look) for ims in real[n].values() for im in ims)

    def real_prompt(n: str) -> float:
        from workers.toyworld.reader import read_attributes

        return mean(
            read_attributes(im).background == bg for bg, ims in real[n].items() for im in ims
        )

    def real_corr(n: str) -> float:
        return fidelity.mean_similarity([im for ims in real[n].values() for im in ims], refs[n])

    def best_words(n: str) -> dict[str, list[str]]:
        look = subject(n).look
        candidates = base[n]["words"].values()
        return max(
            candidates, key=lambda c: (metrics.hit_rate(c, look), metrics.correlogram(c, refs[n]))
        )

    words = {n: best_words(n) for n in names}
    look = {n: subject(n).look for n in names}
    return [
        Row("Reference: new photos, unseen backgrounds", None, "–", mean(map(real_hits, names)),
            mean(map(real_corr, names)), mean(map(real_prompt, names)), None, None),
        Row("Reference: VAE round trip of those photos (ceiling)", None, "–",
            mean(metrics.hit_rate(round_trip[n], look[n]) for n in names),
            mean(metrics.correlogram(round_trip[n], refs[n]) for n in names),
            mean(metrics.prompt_fidelity(round_trip[n]) for n in names), None, None),
        Row("Reference: best words-only prompt (base model)", None, "no fit",
            mean(metrics.hit_rate(words[n], look[n]) for n in names),
            mean(metrics.correlogram(words[n], refs[n]) for n in names),
            mean(metrics.prompt_fidelity(words[n]) for n in names), 0.0, 0.0),
        Row("Reference: base model, superclass prompt", None, "no fit",
            mean(metrics.hit_rate(base[n]["eval"], look[n]) for n in names),
            mean(metrics.correlogram(base[n]["eval"], refs[n]) for n in names),
            mean(metrics.prompt_fidelity(base[n]["eval"]) for n in names), 0.0, 0.0),
    ]  # fmt: skip


def score(settings: Settings, results: dict, isolated: bool) -> QualityReport:
    """Score every worker's saved images into a report."""
    names = settings.subjects
    refs = {}
    for n in names:
        train_bgs, _ = backgrounds(n, settings.test_backgrounds)
        refs[n] = fidelity.reference(photos(n, settings.n_photos, settings.seed, train_bgs)[0])
    base = results["base"]["subjects"]
    rows = _reference_rows(settings, base, refs)
    per_subject: dict = {
        "Base model, superclass prompt": {
            n: metrics.hit_rate(base[n]["eval"], subject(n).look) for n in names
        }
    }
    for method, recipe in settings.recipes.items():
        res = results[method]["subjects"]
        scores = {}
        for n in names:
            superclass_prompt, other_prompt = drift_prompts(n)
            drift, reference = res[n]["drift"], base[n]["drift"]
            scores[n] = (
                metrics.hit_rate(res[n]["eval"], subject(n).look),
                metrics.correlogram(res[n]["eval"], refs[n]),
                metrics.prompt_fidelity(res[n]["eval"]),
                metrics.drift(drift[superclass_prompt], reference[superclass_prompt]),
                metrics.drift(drift[other_prompt], reference[other_prompt]),
            )
        label = ENTRY_LABELS[method]
        per_subject[label] = {n: scores[n][0] for n in names}
        peak = max(res[n]["peak_rss_after_fit_mib"] for n in names)
        loaded = results[method].get("rss_loaded_mib")
        rows.append(
            Row(
                label,
                method,
                recipe.describe(method_family(method)) + (", masked" if recipe.masked else ""),
                *(mean(v[i] for v in scores.values()) for i in range(5)),
                fit_s=mean(res[n]["fit_s"] for n in names),
                peak_rss_mib=peak if isolated else None,
                fit_rss_delta_mib=(peak - loaded) if isolated and loaded is not None else None,
                artefact_bytes=mean(res[n]["artefact_bytes"] for n in names),
            )
        )
    sweep = []
    if sweep_method(settings) in results:
        perf = results[sweep_method(settings)]["subjects"]
        for strength in settings.sweep:
            key = str(strength)
            runs = [
                perf[n]["eval"] if strength == DEFAULT_STRENGTH else perf[n]["sweep"][key]
                for n in names
            ]
            sweep.append(
                {
                    "strength": strength,
                    "hit_rate": mean(
                        metrics.hit_rate(r, subject(n).look)
                        for r, n in zip(runs, names, strict=True)
                    ),
                    "correlogram": mean(
                        metrics.correlogram(r, refs[n]) for r, n in zip(runs, names, strict=True)
                    ),
                    "prompt_fidelity": mean(metrics.prompt_fidelity(r) for r in runs),
                }
            )
    covariance_s = results["base"].get("covariance_s", float("nan"))
    return QualityReport(settings, rows, sweep, 0.0, isolated, per_subject, covariance_s)
