"""One harness worker: fit one method on every subject and save its images (or the base's).

Every method runs in its own forked subprocess (fresh pipeline per subject), so its fit wall
time and peak resident memory (ru_maxrss) are its own; the parent only scores the saved PNGs.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import sys
import time
from pathlib import Path

from PIL import Image

from bench.common import peak_rss_mib, quiet
from bench.quality.settings import (
    DEFAULT_STRENGTH,
    Settings,
    backgrounds,
    drift_prompts,
    method_family,
    photos,
    subject,
    superclass_prompt,
    sweep_method,
    words_only_prompts,
)


def _save(images: list[Image.Image], folder: Path, stem: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, image in enumerate(images):
        path = folder / f"{stem}-{k}.png"
        image.save(path)
        paths.append(str(path))
    return paths


def _round_trip(pipe, images: list[Image.Image]) -> list[Image.Image]:
    """The images through the base model's VAE: what any method can at best reproduce."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images]))
    x = (x / 127.5 - 1.0).permute(0, 3, 1, 2).to(pipe.vae.device, pipe.vae.dtype)
    with torch.no_grad():
        y = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample
    arrays = ((y.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu()
    return [Image.fromarray(a.numpy()) for a in arrays]


def _base_entry(pipe, name: str, settings: Settings, folder: Path, gen: dict) -> dict:
    from workers.perfusion import generate

    entry: dict = {"eval": {}, "words": {}, "round_trip": {}}
    _, test_bgs = backgrounds(name, settings.test_backgrounds)
    for k, bg in enumerate(test_bgs):
        seed = settings.seed + 1000 + k
        entry["eval"][bg] = _save(
            generate(pipe, superclass_prompt(name, bg), seed=seed, n=settings.n_eval, **gen),
            folder,
            f"eval-{bg}",
        )
        for j, prompt in enumerate(words_only_prompts(name, bg)):
            images = generate(pipe, prompt, seed=seed, n=settings.n_eval, **gen)
            entry["words"].setdefault(str(j), {})[bg] = _save(images, folder, f"words{j}-{bg}")
        real, _ = photos(name, settings.n_eval, settings.seed + 1 + k, (bg,))
        entry["round_trip"][bg] = _save(_round_trip(pipe, real), folder, f"roundtrip-{bg}")
    return entry


def run_worker(method: str, settings: Settings, out: Path) -> dict:
    """Fit `method` on every subject and generate its evaluation images (or the base's)."""
    import torch

    from bench.methods import FITTERS
    from workers.perfusion import generate, get_covariance, load_pipeline, strength_to_control
    from workers.toyworld.world import captions

    torch.set_num_threads(settings.threads)
    quiet()
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"method": method, "subjects": {}, "rss_start_mib": peak_rss_mib()}
    gen = dict(steps=settings.gen_steps, guidance=settings.guidance)
    recipe = settings.recipes.get(method)
    family = "base" if method == "base" else method_family(method)
    fitter = FITTERS.get(family)
    covariance = None
    for name in settings.subjects:
        train_bgs, test_bgs = backgrounds(name, settings.test_backgrounds)
        pipe = load_pipeline(settings.model, "cpu")
        if (method == "base" or method.startswith("perfusion")) and covariance is None:
            # Once per base model, outside the timed fits: the base worker computes it (timed
            # here) and the Perfusion workers read the cached file, as a warm production worker.
            started = time.perf_counter()
            covariance = get_covariance(
                pipe,
                captions=captions(settings.covariance_captions, settings.seed),
                cache_dir=out / "covariance",
            )
            result["covariance_s"] = time.perf_counter() - started
        result.setdefault("rss_loaded_mib", peak_rss_mib())
        folder = out / method / name
        fitted = None
        if method == "base":
            with torch.no_grad():
                entry = _base_entry(pipe, name, settings, folder, gen)
        else:
            assert recipe is not None and fitter is not None
            entry = {"eval": {}, "drift": {}, "sweep": {}}
            images, masks = photos(name, settings.n_photos, settings.seed, train_bgs)
            torch.manual_seed(settings.seed)
            started = time.perf_counter()
            fitted = fitter(
                pipe, images, masks if recipe.masked else None, name,
                subject(name).superclass, recipe, settings.seed, covariance,
            )  # fmt: skip
            entry["fit_s"] = time.perf_counter() - started
            entry["peak_rss_after_fit_mib"] = peak_rss_mib()
            entry["artefact_bytes"] = len(fitted.artefact)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "artefact.safetensors").write_bytes(fitted.artefact)
            with torch.no_grad():
                for k, bg in enumerate(test_bgs):
                    seed = settings.seed + 1000 + k
                    images = fitted.generate(
                        pipe, fitted.prompt(bg), seed=seed, n=settings.n_eval, **gen
                    )
                    entry["eval"][bg] = _save(images, folder, f"eval-{bg}")
                if method == sweep_method(settings):
                    for strength in settings.sweep:
                        if strength == DEFAULT_STRENGTH:
                            continue  # the default strength: the eval images above
                        control = strength_to_control(strength)
                        runs = entry["sweep"][str(strength)] = {}
                        for k, bg in enumerate(test_bgs):
                            images = fitted.generate(
                                pipe, fitted.prompt(bg), seed=settings.seed + 1000 + k,
                                n=settings.n_sweep, control=control, **gen,
                            )  # fmt: skip
                            runs[bg] = _save(images, folder, f"sweep{strength}-{bg}")
        entry["drift"] = {}
        with torch.no_grad():
            for k, prompt in enumerate(drift_prompts(name)):
                seed = settings.seed + 2000 + k
                if fitted is None:
                    images = generate(pipe, prompt, seed=seed, n=settings.n_drift, **gen)
                else:
                    images = fitted.generate(pipe, prompt, seed=seed, n=settings.n_drift, **gen)
                entry["drift"][prompt] = _save(images, folder, f"drift-{k}")
        result["subjects"][name] = entry
        print(f"[quality] {method} {name} done {entry.get('fit_s', 0):.1f}s fit", file=sys.stderr)
        del pipe, fitted
        gc.collect()
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def _child(method: str, settings_json: str, out: str) -> None:
    result = run_worker(method, Settings.from_json(settings_json), Path(out))
    (Path(out) / f"{method}.result.json").write_text(json.dumps(result))


def run_isolated(method: str, settings: Settings, out: Path) -> dict:
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
