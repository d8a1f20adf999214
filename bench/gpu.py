"""GPU benchmark: Perfusion on an SD 1.5- or SDXL-shaped pipeline (random weights).

`python -m bench.gpu` on a CUDA machine prints one table: seconds per fit step at the default
batch (4 × 4 accumulation), the projected full-fit time, seconds per image at 25 steps with and
without a concept, and peak GPU memory, for bf16 and fp32. Random weights have the real model's
shapes, so compute and memory match SD 1.5 (512 px); image quality is meaningless here.
`--arch sdxl` does the same for SDXL base 1.0 at 1024 px (70 attn2 layers, 2048-d text).
`--tiny` runs the same code on the CPU with small shapes (a dry run of the script).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.sd15 import make_sd15_pipeline
from bench.sdxl import make_sdxl_pipeline
from workers.perfusion import (
    FitConfig,
    architecture,
    compute_covariance,
    concept_to_bytes,
    default_batch,
    fit_concept,
    generate,
)
from workers.perfusion.covariance import read_captions

FULL_FIT_STEPS = 400


def _images(count: int, size: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(count):
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = (200, 40 * k, 30)
        out.append(Image.fromarray(pixels))
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# (label, frozen weights dtype, bf16 autocast, micro-batch, accumulation): the same effective
# batch of 16 throughout. The first is the re-implementations' recipe.
FIT_VARIANTS = (
    ("fp32 weights, bf16 autocast, 4×4", torch.float32, True, 4, 4),
    ("fp32 weights, bf16 autocast, 16×1", torch.float32, True, 16, 1),
    ("bf16 weights, 16×1", torch.bfloat16, True, 16, 1),
    ("fp32 weights, fp32, 4×4", torch.float32, False, 4, 4),
)
# SDXL at 1024 px: the library's CUDA default (4 × 4) first; 16 × 1 may not fit in memory.
SDXL_FIT_VARIANTS = (
    ("fp32 weights, bf16 autocast, 4×4", torch.float32, True, 4, 4),
    ("bf16 weights, 4×4", torch.bfloat16, True, 4, 4),
    ("bf16 weights, 16×1", torch.bfloat16, True, 16, 1),
)


def bench_fit(pipe, cov, device: str, variant: tuple, steps: int, size: int) -> dict:  # type: ignore[no-untyped-def]
    """Time `steps` optimiser steps of one variant; the first step is warm-up."""
    label, dtype, autocast, batch, accum = variant
    stamps: list[tuple[int, float]] = []  # (step, time) of each progress event
    config = FitConfig(
        steps=steps,
        batch_size=batch,
        grad_accum=accum,
        resolution=size,
        seed=0,
        mixed_precision=autocast,
    )
    pipe.to(dtype=dtype)
    _reset_peak(device)
    start = time.perf_counter()

    def on_progress(progress) -> None:  # type: ignore[no-untyped-def]
        _sync(device)
        stamps.append((progress.step, time.perf_counter()))

    concept = fit_concept(
        pipe, _images(4, size), "<bench>", "dog", config, cov, on_progress=on_progress
    )
    _sync(device)
    total = time.perf_counter() - start
    # Events are throttled (FitConfig.progress_interval_s), several steps apart: time per
    # step between events, the first event's steps (warm-up included) left out.
    rates = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in itertools.pairwise(stamps[1:])]
    per_step = statistics.median(rates) if rates else total / steps
    setup = stamps[0][1] - start - per_step * stamps[0][0] if stamps else 0.0
    pipe.to(dtype=torch.float32)
    return {
        "variant": label,
        "s_per_step": per_step,
        "setup_s": max(setup, 0.0),
        "projected_full_fit_s": max(setup, 0.0) + per_step * FULL_FIT_STEPS,
        "fit_peak_gib": _peak_gib(device),
        "concept": concept,
    }


def bench_end_to_end(pipe, cov, device: str, steps: int, size: int) -> dict:  # type: ignore[no-untyped-def]
    """Wall time of the worker's fit call, warm: 4 photos in, concept file bytes out.

    The same call as `workers.handlers.fit` makes (the worker's batch for this architecture
    and device, the library's defaults otherwise, and the weights' dtype `load_pipeline`
    gives the worker: fp16 on CUDA, which the fit upcasts, fp32 on a CPU); only the database
    reads and writes around it are left out."""
    batch, accum = default_batch(architecture(pipe), device == "cuda")
    config = FitConfig(steps=steps, batch_size=batch, grad_accum=accum, resolution=size, seed=0)
    photos = _images(4, size)
    pipe.to(dtype=torch.float16 if device == "cuda" else torch.float32)
    _reset_peak(device)
    _sync(device)
    start = time.perf_counter()
    concept = fit_concept(pipe, photos, "<e2e>", "dog", config, cov)
    data = concept_to_bytes(concept)
    _sync(device)
    pipe.to(dtype=torch.float32)
    return {
        "steps": steps,
        "batch": f"{batch}×{accum}",
        "wall_s": time.perf_counter() - start,
        "bytes": len(data),
        "peak_gib": _peak_gib(device),
    }


def bench_generate(pipe, concept, device: str, steps: int, repeats: int) -> dict:  # type: ignore[no-untyped-def]
    """Seconds per image at `steps` denoising steps, base vs one concept, interleaved."""
    times: dict[str, list[float]] = {"base": [], "concept": []}
    _reset_peak(device)
    prompts = {
        "base": "a photo of a dog on the beach",
        "concept": "a photo of a <bench> on the beach",
    }
    generate(pipe, prompts["base"], steps=2, seed=0)  # warm-up
    for _ in range(repeats):
        for kind in ("base", "concept"):
            concepts = [concept] if kind == "concept" else []
            _sync(device)
            t0 = time.perf_counter()
            generate(pipe, prompts[kind], concepts=concepts, steps=steps, seed=1)
            _sync(device)
            times[kind].append(time.perf_counter() - t0)
    base, edited = statistics.median(times["base"]), statistics.median(times["concept"])
    return {
        "s_per_image_base": base,
        "s_per_image_concept": edited,
        "concept_overhead": edited / base - 1,
        "gen_peak_gib": _peak_gib(device),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="CPU dry run with small shapes")
    parser.add_argument("--arch", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--fit-steps", type=int, default=6)
    parser.add_argument("--gen-steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--end-to-end-steps",
        type=int,
        default=0,
        help="also time one whole default fit of this many steps (400: the default) end to end",
    )
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    xl = args.arch == "sdxl"
    size = 64 if args.tiny else 1024 if xl else 512
    variants = SDXL_FIT_VARIANTS if xl else FIT_VARIANTS
    with tempfile.TemporaryDirectory() as tmp:
        if xl:
            pipe = make_sdxl_pipeline(Path(tmp) / "tokenizer", tiny=args.tiny, device=device)
        else:
            pipe = make_sd15_pipeline(Path(tmp) / "tokenizer", tiny=args.tiny).to(device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    t0 = time.perf_counter()
    cov = compute_covariance(pipe, read_captions()[: 256 if args.tiny else 2000])
    cov_s = time.perf_counter() - t0
    gpu = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    print(
        f"# GPU benchmark ({args.arch}) on {gpu}, torch {torch.__version__}, {size}px, "
        f"covariance {cov_s:.1f}s",
        flush=True,
    )

    fit_rows, gen_rows, concept = [], [], None
    print("| fit variant (effective batch 16) | s / step | projected 400-step fit | peak GiB |")
    print("|---|---|---|---|", flush=True)
    for variant in variants:
        try:
            row = bench_fit(pipe, cov, device, variant, args.fit_steps, size)
        except Exception as exc:  # one failing variant must not hide the others' figures
            print(f"| {variant[0]} | failed: {type(exc).__name__}: {exc} | | |", flush=True)
            pipe.to(dtype=torch.float32)
            continue
        concept = concept or row.pop("concept")
        row.pop("concept", None)
        fit_rows.append(row)
        print(
            f"| {row['variant']} | {row['s_per_step']:.3f} | "
            f"{row['projected_full_fit_s']:.0f} s | {row['fit_peak_gib']:.1f} |",
            flush=True,
        )
    print()
    print("| generation dtype | s / image (25 steps) | with one concept | overhead | peak GiB |")
    print("|---|---|---|---|---|", flush=True)
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        if concept is None:
            break
        try:
            pipe.to(dtype=dtype)
            steps = 2 if args.tiny else args.gen_steps
            row = {"dtype": name, **bench_generate(pipe, concept, device, steps, args.repeats)}
        except Exception as exc:
            print(f"| {name} | failed: {type(exc).__name__}: {exc} | | | |", flush=True)
            continue
        finally:
            pipe.to(dtype=torch.float32)
        gen_rows.append(row)
        print(
            f"| {name} | {row['s_per_image_base']:.2f} | {row['s_per_image_concept']:.2f} | "
            f"{100 * row['concept_overhead']:+.1f}% | {row['gen_peak_gib']:.1f} |",
            flush=True,
        )
    rows: dict[str, list[dict]] = {"fit": fit_rows, "generate": gen_rows, "end_to_end": []}  # type: ignore[type-arg]
    if args.end_to_end_steps:
        print()
        print(
            "| whole fit, warm (photos in → concept file out) | steps | batch | wall s | peak GiB |"
        )
        print("|---|---|---|---|---|", flush=True)
        row = bench_end_to_end(pipe, cov, device, args.end_to_end_steps, size)
        rows["end_to_end"].append(row)
        print(
            f"| the worker's fit call (CUDA: fp16 weights, upcast; bf16 autocast) | "
            f"{row['steps']} | "
            f"{row['batch']} | {row['wall_s']:.1f} | {row['peak_gib']:.1f} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"device": gpu, "arch": args.arch, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
