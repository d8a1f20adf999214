"""Quality harness: Perfusion vs LoRA, DreamBooth and Textual Inversion on held-out toy concepts.

    python -m bench.quality [--quick] [--model workers/toyworld/model] [--threads 1]

For each held-out toy-world concept (a patterned object the base model never saw), each method
is fitted on N_PHOTOS photos of it on two training backgrounds, then asked for the concept on
backgrounds it was never shown with. Every method runs in its own subprocess (fresh pipeline
per concept), so its fit wall time and peak resident memory (ru_maxrss) are its own; the
parent only scores the saved PNGs. Metrics, per concept, then averaged:

- concept fidelity: `bench.fidelity` colour-pattern correlogram intersection between each
  generated image's object and the concept's training photos, in [0, 1];
- prompt fidelity: fraction of images whose background, as read by the toy-world reader,
  is the asked-for one (never seen with the concept);
- prior drift: mean absolute pixel difference (0-255) between base and personalised images for
  prompts WITHOUT the concept, same seeds (0 = unchanged);
- fit time, peak RSS, artefact bytes.

A second table sweeps Perfusion's inference strength (one fitted concept, no retraining).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import multiprocessing
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from bench import fidelity
from bench.common import ROOT, human_bytes, machine_header, peak_rss_mib, quiet, table
from bench.methods import LABELS, METHODS, Recipe
from workers.toyworld.world import BACKGROUNDS, HELDOUT_CONCEPTS, render_concept

DEFAULT_MODEL = ROOT / "workers" / "toyworld" / "model"
TRAIN_BACKGROUNDS = ("gray", "green")
SWEEP = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_STRENGTH = 0.5  # = the concept's default gate (beta 0.7, tau 0.15)


def full_recipes() -> dict[str, Recipe]:
    """Each method's usual recipe, scaled to the toy model by one stated rule.

    Learning rates of the methods that train base weights keep their SD 1.5 ratio to the base
    model's own training lr (SD 1.5 1e-4; the toy model 1e-3, see its training.json): DreamBooth
    5e-6 → 5e-5, DreamBooth-LoRA 1e-4 → 1e-3. Methods that train only new vectors keep their
    usual lr (Perfusion 6e-3 embedding / 3e-2 o*_V; TI 5e-3). Every method gets the same
    budget of 80 steps × batch 4 (the SD recipes' ~400-800 steps do not fit a shared 2-core CPU
    for four methods × four concepts); DreamBooth adds a class batch of 4 per step
    (prior preservation, weight 1, 4 class images per concept from the base model).
    """
    return {
        "perfusion": Recipe(steps=80, batch_size=4, lr_embedding=6e-3, lr_value=3e-2),
        "lora": Recipe(steps=80, batch_size=4, lr=1e-3, rank=4),
        "dreambooth": Recipe(steps=80, batch_size=4, lr=5e-5, class_images=4),
        "textual_inversion": Recipe(steps=80, batch_size=4, lr=5e-3),
    }


@dataclass
class Settings:
    model: str = str(DEFAULT_MODEL)
    concepts: list[str] = field(default_factory=lambda: list(HELDOUT_CONCEPTS))
    recipes: dict[str, Recipe] = field(default_factory=full_recipes)
    n_photos: int = 4
    test_backgrounds: int = 2
    n_eval: int = 4  # images per (concept, unseen background)
    n_drift: int = 2  # images per drift prompt
    sweep: tuple[float, ...] = SWEEP
    n_sweep: int = 2  # images per (strength, background) in the sweep
    gen_steps: int = 20
    guidance: float = 4.0
    seed: int = 0
    threads: int = 1
    covariance_captions: int = 2000

    def to_json(self) -> str:
        data = asdict(self)
        data["sweep"] = list(self.sweep)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        data = json.loads(text)
        data["recipes"] = {k: Recipe(**v) for k, v in data["recipes"].items()}
        data["sweep"] = tuple(data["sweep"])
        return cls(**data)


def quick_settings(**overrides) -> Settings:
    """Two concepts, fewer steps and images: a few minutes, for development."""
    recipes = {
        k: dataclasses.replace(r, steps=max(2, r.steps // 4)) for k, r in full_recipes().items()
    }
    base = dict(
        concepts=["candy", "split"], recipes=recipes, n_eval=2, n_sweep=2, sweep=(0.0, 0.5, 1.0),
        gen_steps=10,
    )  # fmt: skip
    base.update(overrides)
    return Settings(**base)


# ---------------------------------------------------------------- the world of the benchmark


def backgrounds(name: str, count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training backgrounds, unseen test backgrounds) that differ from the concept's colours."""
    colors = set(HELDOUT_CONCEPTS[name].colors)
    train = tuple(b for b in TRAIN_BACKGROUNDS if b not in colors)
    test = tuple(b for b in BACKGROUNDS if b not in colors and b not in train)
    return train, test[:count]


def photos(name: str, n: int, seed: int, on: tuple[str, ...]) -> list[Image.Image]:
    """n photos of a held-out concept, cycling through the backgrounds `on`."""
    return [
        render_concept(name, on[k % len(on)], random.Random(f"{name}-{seed}-{k}")) for k in range(n)
    ]


def drift_prompts(name: str) -> tuple[str, ...]:
    """Prompts without the concept: its superclass in a plain colour, and an unrelated object."""
    concept = HELDOUT_CONCEPTS[name]
    plain = next(c for c in ("green", "red", "blue") if c not in concept.colors)
    return (
        f"a {plain} {concept.superclass} on a white background",
        "a purple ring on a black background",
    )


# ---------------------------------------------------------------- worker (one per method)


def _load(model: str):
    from workers.perfusion import load_pipeline

    return load_pipeline(model, "cpu")


def _save(images: list[Image.Image], folder: Path, stem: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, image in enumerate(images):
        path = folder / f"{stem}-{k}.png"
        image.save(path)
        paths.append(str(path))
    return paths


def run_worker(method: str, settings: Settings, out: Path) -> dict:
    """Fit `method` on every concept and generate its evaluation images (or the base's)."""
    import torch

    from bench.methods import FITTERS
    from workers.perfusion import generate, get_covariance, strength_to_control
    from workers.toyworld.world import captions

    torch.set_num_threads(settings.threads)
    quiet()
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"method": method, "concepts": {}, "rss_start_mib": peak_rss_mib()}
    gen = dict(steps=settings.gen_steps, guidance=settings.guidance)
    covariance = None
    for name in settings.concepts:
        concept = HELDOUT_CONCEPTS[name]
        train_bgs, test_bgs = backgrounds(name, settings.test_backgrounds)
        pipe = _load(settings.model)
        if method in ("base", "perfusion") and covariance is None:
            # Once per base model, outside the timed fits: the base worker computes it (timed
            # here) and the Perfusion worker reads the cached file, as a warm production worker.
            started = time.perf_counter()
            covariance = get_covariance(
                pipe,
                captions=captions(settings.covariance_captions, settings.seed),
                cache_dir=out / "covariance",
            )
            result["covariance_s"] = time.perf_counter() - started
        result.setdefault("rss_loaded_mib", peak_rss_mib())
        folder = out / method / name
        entry: dict = {"eval": {}, "drift": {}, "sweep": {}}
        if method == "base":
            for k, bg in enumerate(test_bgs):
                prompt = f"a {concept.superclass} on a {bg} background"
                images = generate(
                    pipe, prompt, seed=settings.seed + 1000 + k, n=settings.n_eval, **gen
                )
                entry["eval"][bg] = _save(images, folder, f"eval-{bg}")
            fitted = None
        else:
            images = photos(name, settings.n_photos, settings.seed, train_bgs)
            recipe = settings.recipes[method]
            torch.manual_seed(settings.seed)
            started = time.perf_counter()
            fitted = FITTERS[method](
                pipe, images, None, name, concept.superclass, recipe, settings.seed, covariance
            )
            entry["fit_s"] = time.perf_counter() - started
            entry["peak_rss_after_fit_mib"] = peak_rss_mib()
            entry["artefact_bytes"] = len(fitted.artefact)
            (folder).mkdir(parents=True, exist_ok=True)
            (folder / "artefact.safetensors").write_bytes(fitted.artefact)
            with torch.no_grad():
                for k, bg in enumerate(test_bgs):
                    images = fitted.generate(
                        pipe,
                        fitted.prompt(bg),
                        seed=settings.seed + 1000 + k,
                        n=settings.n_eval,
                        **gen,
                    )
                    entry["eval"][bg] = _save(images, folder, f"eval-{bg}")
                if method == "perfusion":
                    for strength in settings.sweep:
                        if strength == DEFAULT_STRENGTH:
                            continue  # the default gate: the eval images above
                        control = strength_to_control(strength)
                        entry["sweep"][str(strength)] = {}
                        for k, bg in enumerate(test_bgs):
                            images = fitted.generate(
                                pipe, fitted.prompt(bg), seed=settings.seed + 1000 + k,
                                n=settings.n_sweep, control=control, **gen,
                            )  # fmt: skip
                            entry["sweep"][str(strength)][bg] = _save(
                                images, folder, f"sweep{strength}-{bg}"
                            )
        with torch.no_grad():
            for k, prompt in enumerate(drift_prompts(name)):
                seed = settings.seed + 2000 + k
                if fitted is None:
                    images = generate(pipe, prompt, seed=seed, n=settings.n_drift, **gen)
                else:
                    images = fitted.generate(pipe, prompt, seed=seed, n=settings.n_drift, **gen)
                entry["drift"][prompt] = _save(images, folder, f"drift-{k}")
        result["concepts"][name] = entry
        print(f"[quality] {method} {name} done {entry.get('fit_s', 0):.1f}s fit", file=sys.stderr)
        del pipe, fitted
        gc.collect()
    result["peak_rss_mib"] = peak_rss_mib()
    return result


# ---------------------------------------------------------------- parent: run and score


@dataclass
class Row:
    label: str
    method: str | None
    recipe: str
    concept_fidelity: float
    prompt_fidelity: float
    drift_superclass: float | None
    drift_other: float | None
    fit_s: float | None = None
    peak_rss_mib: float | None = None
    fit_rss_delta_mib: float | None = None
    artefact_bytes: float | None = None


@dataclass
class QualityReport:
    settings: Settings
    rows: list[Row]
    sweep: list[dict]
    wall_s: float
    isolated: bool
    per_concept: dict = field(default_factory=dict)
    covariance_s: float = float("nan")

    def row(self, method: str) -> Row:
        return next(r for r in self.rows if r.method == method)

    def quality_table(self) -> str:
        headers = [
            "Method", "Recipe (toy scale)", "Concept fidelity ↑", "Prompt fidelity ↑",
            "Drift ↓ superclass prompt", "Drift ↓ other prompt", "Fit time (s)", "Peak RSS (MiB)",
            "Fit Δ RSS (MiB)", "Artefact",
        ]  # fmt: skip
        rows = [
            [
                r.label, r.recipe, r.concept_fidelity, r.prompt_fidelity, r.drift_superclass,
                r.drift_other, r.fit_s,
                r.peak_rss_mib, r.fit_rss_delta_mib,
                human_bytes(r.artefact_bytes) if r.artefact_bytes is not None else None,
            ]
            for r in self.rows
        ]  # fmt: skip
        return table(headers, rows)

    def sweep_table(self) -> str:
        headers = ["Strength", "β (τ=0.15)", "Concept fidelity ↑", "Prompt fidelity ↑"]
        rows = [
            [
                f"{s['strength']:.2f}",
                f"{s['beta']:.2f}",
                s["concept_fidelity"],
                s["prompt_fidelity"],
            ]
            for s in self.sweep
        ]
        return table(headers, rows)

    def notes(self) -> str:
        s = self.settings
        memory = (
            "Peak RSS = ru_maxrss of the method's own subprocess read right after its last fit "
            "(includes Python, torch and the loaded pipeline); Fit Δ RSS = that minus the "
            "high-water mark right after loading the pipeline."
            if self.isolated
            else "Run in-process (not isolated): memory figures are not per method."
        )
        return (
            f"Held-out concepts: {', '.join(s.concepts)} ({s.n_photos} photos each on "
            f"{'/'.join(TRAIN_BACKGROUNDS)} backgrounds); evaluated on {s.test_backgrounds} unseen "
            f"backgrounds × {s.n_eval} images, {s.gen_steps} DDIM steps, guidance {s.guidance}, "
            f"seed {s.seed}, {s.threads} torch thread(s). Concept fidelity: colour-pattern "
            "correlogram intersection of the object region with the concept's photos (see "
            "bench/fidelity.py), 1 = same statistics; Prompt fidelity: fraction of images whose "
            "background (toy-world reader) is the asked-for unseen one; Drift: mean |Δ| pixel "
            "(0-255) vs the base model, same seeds, on prompts WITHOUT the concept: its "
            f"superclass in a plain colour (e.g. '{drift_prompts(s.concepts[0])[0]}') and an "
            f"unrelated object ('{drift_prompts(s.concepts[0])[1]}'), {s.n_drift} images each. "
            f"{memory} Fit time excludes "
            "loading the model and Perfusion's per-base-model covariance (computed once, "
            f"{self.covariance_s:.1f} s); "
            "DreamBooth's includes generating its class images. Artefacts are the saved files, "
            "fp16. Wall time of the whole harness: "
            f"{self.wall_s:.0f} s."
        )

    def caveat(self) -> str:
        """A warning when no method beats the base model's own fidelity (nothing learned)."""
        base = next(r for r in self.rows if r.label.startswith("Reference: base model"))
        best = max(r.concept_fidelity for r in self.rows if r.method)
        if best > base.concept_fidelity:
            return ""
        return (
            "\n\n**Caveat:** no method's concept fidelity exceeds the base model's on the bare "
            f"superclass prompt ({best:.3f} ≤ {base.concept_fidelity:.3f}): with this base model "
            "and budget none of the methods learned the patterned concepts, so these quality "
            "figures test the machinery, not the methods (the base model's own prompt fidelity "
            f"is {base.prompt_fidelity:.2f})."
        )

    def render(self) -> str:
        return (
            "### Personalization quality (mean over held-out concepts)\n\n"
            + self.quality_table()
            + "\n\n"
            + self.notes()
            + self.caveat()
            + "\n\n### Perfusion strength sweep (one fit, inference gate only)\n\n"
            + self.sweep_table()
            + "\n"
        )


def _images(paths: list[str]) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in paths]


def _drift(a: list[str], b: list[str]) -> float:
    return float(
        np.mean(
            [
                np.abs(np.asarray(x, dtype=np.float32) - np.asarray(y, dtype=np.float32)).mean()
                for x, y in zip(_images(a), _images(b), strict=True)
            ]
        )
    )


def _prompt_fidelity(by_bg: dict[str, list[str]]) -> float:
    from workers.toyworld.reader import read_attributes

    hits = [
        read_attributes(im).background == bg for bg, paths in by_bg.items() for im in _images(paths)
    ]
    return float(np.mean(hits))


def _fidelity(by_bg: dict[str, list[str]], ref: np.ndarray) -> float:
    return fidelity.mean_similarity([im for paths in by_bg.values() for im in _images(paths)], ref)


def _child(method: str, settings_json: str, out: str) -> None:
    result = run_worker(method, Settings.from_json(settings_json), Path(out))
    (Path(out) / f"{method}.result.json").write_text(json.dumps(result))


def _isolated(method: str, settings: Settings, out: Path) -> dict:
    """Run one method in a forked child, so its peak RSS and timings are its own.

    Forking (not spawning) skips re-importing torch/diffusers (~10 s of CPU each). The parent
    has imported but never run torch, so no thread pool is forked.
    """
    context = multiprocessing.get_context("fork")
    process = context.Process(target=_child, args=(method, settings.to_json(), str(out)))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"quality worker {method!r} failed with exit code {process.exitcode}")
    return json.loads((out / f"{method}.result.json").read_text())


def run_quality(
    settings: Settings, isolate: bool = True, workdir: Path | None = None
) -> QualityReport:
    """Run every method (and the base) and score them; `isolate` = one subprocess per method."""
    started = time.perf_counter()
    import bench.methods  # noqa: F401  heavy imports once, before forking the workers
    import workers.toyworld.reader  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        out = Path(workdir or tmp)
        results = {}
        for method in ("base", *METHODS):
            if isolate:
                results[method] = _isolated(method, settings, out)
            else:
                results[method] = run_worker(method, settings, out)
        report = _score(settings, results, isolate)
    report.wall_s = time.perf_counter() - started
    return report


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def _score(settings: Settings, results: dict, isolated: bool) -> QualityReport:
    from workers.perfusion import strength_to_control
    from workers.toyworld.reader import read_attributes

    names = settings.concepts
    refs, real, real_bgs = {}, {}, {}
    for name in names:
        train_bgs, test_bgs = backgrounds(name, settings.test_backgrounds)
        refs[name] = fidelity.reference(photos(name, settings.n_photos, settings.seed, train_bgs))
        real[name] = photos(name, settings.n_eval * len(test_bgs), settings.seed + 1, test_bgs)
        real_bgs[name] = [test_bgs[k % len(test_bgs)] for k in range(len(real[name]))]
    others = {n: [im for o in names if o != n for im in real[o]] for n in names}
    reader_hits = [
        read_attributes(im).background == bg
        for n in names
        for im, bg in zip(real[n], real_bgs[n], strict=True)
    ]
    base = results["base"]["concepts"]
    rows = [
        Row(
            "Reference: new real photos, unseen backgrounds",
            None,
            "–",
            _mean(fidelity.mean_similarity(real[n], refs[n]) for n in names),
            _mean(reader_hits),
            None,
            None,
        ),
        Row(
            "Reference: other concepts' photos",
            None,
            "–",
            _mean(fidelity.mean_similarity(others[n], refs[n]) for n in names if others[n]),
            float("nan"),
            None,
            None,
        ),
        Row(
            "Reference: base model, superclass prompt",
            None,
            "no fit",
            _mean(_fidelity(base[n]["eval"], refs[n]) for n in names),
            _mean(_prompt_fidelity(base[n]["eval"]) for n in names),
            0.0,
            0.0,
        ),
    ]
    per_concept: dict = {}
    for method in METHODS:
        res = results[method]["concepts"]
        scores = {}
        for n in names:
            superclass_prompt, other_prompt = drift_prompts(n)
            drift = res[n]["drift"]
            reference = base[n]["drift"]
            scores[n] = (
                _fidelity(res[n]["eval"], refs[n]),
                _prompt_fidelity(res[n]["eval"]),
                _drift(drift[superclass_prompt], reference[superclass_prompt]),
                _drift(drift[other_prompt], reference[other_prompt]),
            )
        per_concept[method] = scores
        peak = max(res[n]["peak_rss_after_fit_mib"] for n in names)
        loaded = results[method].get("rss_loaded_mib")
        rows.append(
            Row(
                LABELS[method],
                method,
                settings.recipes[method].describe(method),
                _mean(v[0] for v in scores.values()),
                _mean(v[1] for v in scores.values()),
                _mean(v[2] for v in scores.values()),
                _mean(v[3] for v in scores.values()),
                _mean(res[n]["fit_s"] for n in names),
                peak if isolated else None,
                (peak - loaded) if isolated and loaded is not None else None,
                _mean(res[n]["artefact_bytes"] for n in names),
            )
        )
    sweep = []
    perf = results["perfusion"]["concepts"]
    for strength in settings.sweep:
        runs = [
            perf[n]["eval"] if strength == DEFAULT_STRENGTH else perf[n]["sweep"][str(strength)]
            for n in names
        ]
        sweep.append(
            {
                "strength": strength,
                "beta": strength_to_control(strength).beta,
                "concept_fidelity": _mean(
                    _fidelity(r, refs[n]) for r, n in zip(runs, names, strict=True)
                ),
                "prompt_fidelity": _mean(_prompt_fidelity(r) for r in runs),
            }
        )
    covariance_s = results["base"].get("covariance_s", float("nan"))
    return QualityReport(settings, rows, sweep, 0.0, isolated, per_concept, covariance_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 concepts, fewer steps (minutes)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--in-process", action="store_true", help="no subprocesses (no memory)")
    parser.add_argument("--keep", type=Path, help="keep images and artefacts in this folder")
    args = parser.parse_args(argv)
    settings = quick_settings() if args.quick else Settings()
    settings.model, settings.threads = args.model, args.threads
    report = run_quality(settings, isolate=not args.in_process, workdir=args.keep)
    print(machine_header())
    print()
    print(report.render())


if __name__ == "__main__":
    main()
