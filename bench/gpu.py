"""GPU benchmark of Perfusion fits on an SD 1.5-shaped pipeline (random weights, real shapes).

    python -m bench.gpu                      # CUDA: the tables of issue #13 (bench/gpu_check.sh)
    python -m bench.gpu --tiny               # the same code on the CPU at toy sizes (seconds)
    python -m bench.gpu --arch sdxl --sections variants,generate   # SDXL base-shaped, 1024 px

Sections (`--sections`, comma-separated):
- `options`: seconds per fit step of the production default (on CUDA: fp16 weights upcast to
  fp32 under bf16 autocast, 16 × 1) and of each speed option alone (FitConfig's
  channels_last, frozen_dtype="bf16", fused_adamw; `--compile` adds a compiled UNet), from
  the wall time of whole fits: (T(1 + n steps) − T(1)) / n, so setup is left out and the
  sync-free loop runs as in production. "kept" combines the options that gained ≥ 2 %.
- `phases`: one profiled fit (torch.profiler): per step, the device time of the UNet
  forward + backward, the Perfusion edit, the text encoder, loss, optimiser, i* refresh and
  batch sampling (each backward kernel counted with the forward op it differentiates), the
  rest of the step as overhead (the device idle: launches and host work); FLOPs per step
  (torch.utils.flop_counter) and the TFLOP/s achieved.
- `e2e`: the end-to-end wall time of a default fit through the real worker code path: the
  studio (`perfusion-studio serve`, embedded: SQLite, the in-process Celery worker) on the
  model saved to disk and loaded as production loads it; four photos uploaded, the concept
  file and its two sample images stored. A first, 1-step fit warms the worker (model,
  covariance, compile if asked); the second is the default fit, timed.
- `variants`, `generate`: the earlier tables (micro-batch × accumulation × weight dtype;
  seconds per image with and without a concept), kept for the SDXL script.

`--tiny` keeps every section's code path at toy widths on the CPU, for a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.common import ROOT
from bench.sd15 import make_sd15_pipeline
from bench.sdxl import make_sdxl_pipeline
from workers.perfusion import FitConfig, compute_covariance, default_batch, fit_concept, generate
from workers.perfusion.covariance import read_captions

FULL_FIT_STEPS = 400
KEEP_GAIN = 0.02  # an option is kept when it makes a step at least this much faster
SECTIONS = ("options", "phases", "e2e")


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


class Report:
    """Markdown lines printed as they come and kept for the output file; rows for JSON."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.data: dict[str, Any] = {}

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def table(self, header: list[str]) -> None:
        self("| " + " | ".join(header) + " |")
        self("|" + "---|" * len(header))

    def row(self, cells: list[object]) -> None:
        self("| " + " | ".join(str(c) for c in cells) + " |")


# --- options -------------------------------------------------------------------------------


@dataclass
class Timing:
    s_per_step: float
    setup_s: float
    peak_gib: float
    concept: Any


def time_fit(  # type: ignore[no-untyped-def]
    pipe, cov, config: FitConfig, images, steps: int, device: str, repeats: int = 1
) -> Timing:
    """The production loop's seconds per step: (T(1 + steps) − T(1)) / steps, after a 1-step
    warm-up (cuDNN's algorithm search, the allocator, lazy inits); the median of `repeats`."""
    if repeats > 1:
        runs = [time_fit(pipe, cov, config, images, steps, device) for _ in range(repeats)]
        return sorted(runs, key=lambda t: t.s_per_step)[len(runs) // 2]

    def run(n: int) -> tuple[float, Any]:
        _sync(device)
        started = time.perf_counter()
        concept = fit_concept(
            pipe,
            images,
            "<bench>",
            "dog",
            replace(config, steps=n),
            cov,
            on_progress=lambda p: None,  # as the worker listens: events and cancel checks
            should_cancel=lambda: False,
        )
        _sync(device)
        return time.perf_counter() - started, concept

    run(1)
    one, _ = run(1)
    _reset_peak(device)
    many, concept = run(1 + steps)
    return Timing(max(many - one, 0.0) / steps, one, _peak_gib(device), concept)


def _value_change(concept: Any, reference: Any) -> float:
    """Largest change of o*_V against the reference fit, relative to its largest value."""
    return max(
        float((concept.o_v[k] - v).abs().max() / v.abs().max()) for k, v in reference.o_v.items()
    )


OPTIONS: dict[str, dict[str, Any]] = {
    "channels_last": {"channels_last": True},
    "bf16 frozen weights": {"frozen_dtype": "bf16"},
    "fused AdamW": {"fused_adamw": True},
}


def bench_options(  # type: ignore[no-untyped-def]
    report: Report, pipe, cov, base: FitConfig, device: str, steps: int, size: int,
    compile_: bool, repeats: int = 1,
) -> FitConfig:  # fmt: skip
    """The options table; returns the default config with the options that were kept."""
    images = _images(4, size)
    report(
        f"Fit step, effective batch {base.batch_size * base.grad_accum} "
        f"({base.batch_size}×{base.grad_accum}) at {size} px, {steps} timed steps per row"
        f"{f', median of {repeats} round-robin runs' if repeats > 1 else ''}:"
    )
    report()
    report.table(["variant", "s / step", "vs default", "400-step fit", "Δ o*_V", "peak GiB"])
    rows: list[dict[str, Any]] = []

    def measure_all(variants: dict[str, FitConfig]) -> dict[str, Timing]:
        """Each variant `repeats` times, round-robin (a loaded machine drifts), the median."""
        runs: dict[str, list[Timing]] = {label: [] for label in variants}
        for _ in range(repeats):
            for label, config in variants.items():
                runs[label].append(time_fit(pipe, cov, config, images, steps, device))
        out = {}
        for label, timings in runs.items():
            out[label] = sorted(timings, key=lambda t: t.s_per_step)[len(timings) // 2]
            timing = out[label]
            rows.append({"variant": label, "s_per_step": timing.s_per_step,
                         "setup_s": timing.setup_s})  # fmt: skip
        return out

    def measure(label: str, config: FitConfig) -> Timing:
        return measure_all({label: config})[label]

    every_label = "events every step (a host sync each)"
    first = measure_all(
        {
            "default": base,
            every_label: replace(base, progress_interval_s=0),
            **{label: replace(base, **option) for label, option in OPTIONS.items()},
        }
    )
    default = first["default"]

    def line(label: str, timing: Timing) -> None:
        gain = 1 - timing.s_per_step / default.s_per_step if default.s_per_step else 0.0
        report.row(
            [
                label,
                f"{timing.s_per_step:.4f}",
                f"{-100 * gain:+.1f}%",
                f"{timing.setup_s + FULL_FIT_STEPS * timing.s_per_step:.1f} s",
                f"{_value_change(timing.concept, default.concept):.1e}",
                f"{timing.peak_gib:.1f}",
            ]
        )

    line("default", default)
    line(every_label, first[every_label])
    kept: dict[str, Any] = {}
    for label, option in OPTIONS.items():
        line(label, first[label])
        if first[label].s_per_step < (1 - KEEP_GAIN) * default.s_per_step:
            kept.update(option)
    fast = replace(base, **kept)
    if kept:
        line(f"kept: {', '.join(sorted(kept))}", measure("kept", fast))
    if compile_:
        from workers.perfusion.compile import compile_unet, uncompile_unet, warm_up

        started = time.perf_counter()
        compile_unet(pipe.unet)
        warm_up(pipe, cov, replace(fast, resolution=size), "dog")
        report.data["compile_warm_up_s"] = time.perf_counter() - started
        line(f"kept + compiled UNet (warm-up {time.perf_counter() - started:.0f} s)",
             measure("kept + compiled UNet", fast))  # fmt: skip
        uncompile_unet(pipe.unet)
    report()
    report.data["options"] = rows
    report.data["kept"] = kept
    return fast


# --- phases ----------------------------------------------------------------------------------

PHASES = {
    "perfusion.unet": "UNet fwd+bwd",
    "perfusion.edit": "Perfusion edit (attn2 K/V) fwd+bwd",
    "perfusion.text_encoder": "text encoder fwd+bwd",
    "perfusion.loss": "loss",
    "perfusion.optimizer": "optimiser",
    "perfusion.i_star": "i* refresh (exact tracking)",
    "perfusion.sample": "batch sampling",
    "perfusion.backward": "gradient accumulation, other backward",
}
_BACKWARD = "autograd::engine::evaluate_function"


def phase_seconds(
    events: list[Any], on_device: bool, skip: int = 1
) -> tuple[dict[str, float], int]:
    """Seconds per step of each phase, over the profiled fit's steps after the first `skip`.

    An op belongs to its innermost `perfusion.*` range; an op under a backward node, to the
    phase of the forward op the node differentiates (same sequence number; the autograd
    thread has no ranges of its own). Device time on CUDA, else the ops' own CPU time.
    """
    steps = sorted(
        (e for e in events if e.name == "perfusion.step"), key=lambda e: e.time_range.start
    )[skip:]
    windows = [(e.time_range.start, e.time_range.end) for e in steps]

    def ranged(event: Any) -> str | None:
        while event is not None:
            if event.name in PHASES:
                return event.name
            event = event.cpu_parent
        return None

    forward: dict[int, str] = {}
    for event in events:
        if event.sequence_nr >= 0 and not event.name.startswith(_BACKWARD):
            name = ranged(event)
            if name is not None and name != "perfusion.backward":
                forward.setdefault(event.sequence_nr, name)

    def phase(event: Any) -> str | None:
        while event is not None:
            if event.name.startswith(_BACKWARD) and event.sequence_nr in forward:
                return forward[event.sequence_nr]
            if event.name in PHASES:
                return event.name
            event = event.cpu_parent
        return None

    totals = dict.fromkeys(PHASES.values(), 0.0)
    for event in events:
        start = event.time_range.start
        if not any(a <= start <= b for a, b in windows):
            continue
        name = phase(event)
        if name is None:
            continue
        own = event.self_device_time_total if on_device else event.self_cpu_time_total
        totals[PHASES[name]] += own / 1e6
    count = max(len(windows), 1)
    return {k: v / count for k, v in totals.items()}, len(windows)


def flops_per_step(pipe, cov, config: FitConfig, images) -> float:  # type: ignore[no-untyped-def]
    """FLOPs of one step (all of it: UNet, text encoder, edit, refresh): a 2-step fit's count
    minus a 1-step fit's."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for steps in (1, 2):
        counter = FlopCounterMode(display=False)
        with counter:
            fit_concept(pipe, images, "<bench>", "dog", replace(config, steps=steps), cov)
        counts.append(counter.get_total_flops())
    return float(counts[1] - counts[0])


def bench_phases(  # type: ignore[no-untyped-def]
    report: Report, pipe, cov, config: FitConfig, device: str, steps: int, size: int,
    s_per_step: float | None,
) -> None:  # fmt: skip
    from torch.profiler import ProfilerActivity, profile

    images = _images(4, size)
    fit_concept(pipe, images, "<bench>", "dog", replace(config, steps=1), cov)  # warm-up
    activities = [ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fit_concept(pipe, images, "<bench>", "dog", replace(config, steps=1 + steps), cov)
        _sync(device)
    phases, counted = phase_seconds(list(prof.events()), on_device=device == "cuda")
    flops = flops_per_step(pipe, cov, config, images)
    measured = sum(phases.values())
    step = s_per_step if s_per_step else measured
    what = "device time" if device == "cuda" else "CPU time of the ops"
    report(f"Where a step's time goes ({what}, {counted} profiled steps, default config):")
    report()
    report.table(["phase", "ms / step", "share of the step"])
    for name, seconds in phases.items():
        report.row([name, f"{1e3 * seconds:.2f}", f"{100 * seconds / step:.1f}%"])
    overhead = max(step - measured, 0.0)
    report.row(["overhead (device idle: launches, host work)", f"{1e3 * overhead:.2f}",
                f"{100 * overhead / step:.1f}%"])  # fmt: skip
    report.row(["**step (options table, default)**", f"{1e3 * step:.2f}", "100%"])
    report()
    report(
        f"FLOPs per step {flops / 1e12:.4g} T; achieved {flops / step / 1e12:.4g} TFLOP/s "
        f"over the whole step, {flops / max(measured, 1e-12) / 1e12:.4g} over its busy time."
    )
    report()
    on_gpu = [
        e
        for e in prof.key_averages()
        if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0
    ]
    kernels = sorted(on_gpu, key=lambda e: e.self_device_time_total, reverse=True)[:10]
    if kernels:  # which attention, convolution and GEMM kernels ran (flash SDPA or not)
        total = sum(e.self_device_time_total for e in on_gpu)
        report("Top kernels over the profiled fit (setup included):")
        report()
        report.table(["kernel", "share of device time"])
        for event in kernels:
            report.row([event.key[:90], f"{100 * event.self_device_time_total / total:.1f}%"])
        report()
    report.data["phases_s_per_step"] = phases
    report.data["flops_per_step"] = flops
    report.data["overhead_s_per_step"] = overhead


# --- end to end ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _studio(env: dict[str, str], log: Path) -> Iterator[Any]:
    """`perfusion-studio serve` on its own data directory; an httpx client signed up to it."""
    import httpx

    url = f"http://127.0.0.1:{env['STUDIO_PORT']}"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
        try:
            client = httpx.Client(base_url=url, timeout=120, headers={"Origin": url})
            for _ in range(600):
                if server.poll() is not None:
                    raise RuntimeError(f"the studio exited: {log.read_text()[-2000:]}")
                try:
                    client.get("/api/health")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            signup = {"username": "bench", "password": "correct horse battery staple"}
            client.post("/api/auth/signup", json=signup).raise_for_status()
            yield client
        finally:
            server.terminate()
            server.wait(timeout=60)


def _fit_through_the_studio(client, photos: list[bytes], token: str, steps: int | None) -> dict:  # type: ignore[no-untyped-def]
    """Upload → the fit job's end; its JSON with the wall time from the upload."""
    files = [("images", (f"photo{k}.png", data, "image/png")) for k, data in enumerate(photos)]
    form = {"name": token.strip("<>"), "token": token, "superclass": "dog"}
    if steps is not None:
        form["steps"] = str(steps)
    started = time.monotonic()
    created = client.post("/api/concepts", data=form, files=files)
    created.raise_for_status()
    job_id = created.json()["job"]["id"]
    while (job := client.get(f"/api/jobs/{job_id}").json())["state"] not in (
        "succeeded",
        "failed",
        "canceled",
    ):
        time.sleep(0.1)
    job["wall_s"] = time.monotonic() - started
    if job["state"] != "succeeded":
        raise RuntimeError(f"fit job {job['state']}: {job.get('error')}")
    return job


def bench_end_to_end(  # type: ignore[no-untyped-def]
    report: Report, pipe, device: str, size: int, steps: int, sample_steps: int,
    variants: dict[str, dict[str, str]], out: Path, n_captions: int = 2000,
) -> None:  # fmt: skip
    """Default fits through the studio, warm worker; one row per settings variant."""
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        started = time.perf_counter()
        dtype = torch.float16 if device == "cuda" else torch.float32
        pipe.to(dtype=dtype).save_pretrained(model)  # production loads fp16 on CUDA anyway
        pipe.to(dtype=torch.float32)
        captions = Path(tmp) / "captions.txt"
        captions.write_text("\n".join(read_captions()[:n_captions]))
        save_s = time.perf_counter() - started
        photos = []
        for image in _images(4, size):
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            photos.append(buffer.getvalue())
        report(
            f"End to end through the studio (embedded: SQLite, in-process worker; model saved "
            f"and loaded as production does, {save_s:.0f} s to save): 4 photos → concept file "
            f"and 2 samples ({sample_steps} steps), default fit of {steps} steps, warm worker:"
        )
        report()
        report.table(["settings", "upload → concept ready", "fit", "s / step", "samples",
                      "warm-up job"])  # fmt: skip
        rows = []
        for label, extra in variants.items():
            data = Path(tmp) / label.replace(" ", "-")
            env = dict(os.environ)
            for name in ("STUDIO_REDIS_URL", "STUDIO_DATABASE_URL", "STUDIO_ENV"):
                env.pop(name, None)
            env.update(
                STUDIO_DATA_DIR=str(data),
                STUDIO_PORT=str(_free_port()),
                STUDIO_DEVICE=device,
                STUDIO_BASE_MODEL=str(model),
                STUDIO_COVARIANCE_CAPTIONS=str(captions),
                STUDIO_FIT_STEPS=str(steps),
                STUDIO_SAMPLE_STEPS=str(sample_steps),
                STUDIO_FITS_PER_HOUR="100",
                **extra,
            )
            log = out / f"studio-{label.replace(' ', '-')}.log"
            with _studio(env, log) as client:
                warm = _fit_through_the_studio(client, photos, "<warm>", 1)
                job = _fit_through_the_studio(client, photos, "<bench>", None)
            result = job["result"] or {}
            fit_s = float(result.get("fit_s", float("nan")))
            row = {
                "settings": label,
                "wall_s": job["wall_s"],
                "fit_s": fit_s,
                "samples_s": result.get("samples_s"),
                "warm_up_s": warm["wall_s"],
                "result": result,
            }
            rows.append(row)
            report.row([label, f"{job['wall_s']:.1f} s", f"{fit_s:.1f} s",
                        f"{fit_s / steps:.3f}", f"{float(result.get('samples_s', 0)):.1f} s",
                        f"{warm['wall_s']:.1f} s"])  # fmt: skip
        report()
        report.data["e2e"] = rows


# --- the earlier tables ------------------------------------------------------------------------

# (label, frozen weights dtype, bf16 autocast, micro-batch, accumulation): the same effective
# batch of 16 throughout. The first is the re-implementations' recipe.
FIT_VARIANTS = (
    ("fp32 weights, bf16 autocast, 4×4", torch.float32, True, 4, 4),
    ("fp32 weights, bf16 autocast, 16×1", torch.float32, True, 16, 1),
    ("bf16 weights, 16×1", torch.bfloat16, True, 16, 1),
    ("fp32 weights, fp32, 4×4", torch.float32, False, 4, 4),
)
SDXL_FIT_VARIANTS = (
    ("fp32 weights, bf16 autocast, 4×4", torch.float32, True, 4, 4),
    ("bf16 weights, 4×4", torch.bfloat16, True, 4, 4),
    ("bf16 weights, 16×1", torch.bfloat16, True, 16, 1),
)


def bench_variants(report: Report, pipe, cov, device: str, xl: bool, steps: int, size: int):  # type: ignore[no-untyped-def]
    report("| fit variant (effective batch 16) | s / step | projected 400-step fit | peak GiB |")
    report("|---|---|---|---|")
    concept, rows = None, []
    for label, dtype, autocast, batch, accum in SDXL_FIT_VARIANTS if xl else FIT_VARIANTS:
        config = FitConfig(batch_size=batch, grad_accum=accum, resolution=size,
                           mixed_precision=autocast)  # fmt: skip
        try:
            pipe.to(dtype=dtype)
            timing = time_fit(pipe, cov, config, _images(4, size), steps, device)
        except Exception as exc:  # one failing variant must not hide the others' figures
            report(f"| {label} | failed: {type(exc).__name__}: {exc} | | |")
            continue
        finally:
            pipe.to(dtype=torch.float32)
        concept = concept or timing.concept
        total = timing.setup_s + timing.s_per_step * FULL_FIT_STEPS
        rows.append({"variant": label, "s_per_step": timing.s_per_step, "projected_s": total})
        report(f"| {label} | {timing.s_per_step:.3f} | {total:.0f} s | {timing.peak_gib:.1f} |")
    report()
    report.data["variants"] = rows
    return concept


def bench_generate(report: Report, pipe, concept, device: str, steps: int, repeats: int) -> None:  # type: ignore[no-untyped-def]
    """Seconds per image at `steps` denoising steps, base vs one concept, interleaved."""
    report("| generation dtype | s / image | with one concept | overhead | peak GiB |")
    report("|---|---|---|---|---|")
    prompts = {
        "base": "a photo of a dog on the beach",
        "concept": "a photo of a <bench> on the beach",
    }
    rows = []
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        try:
            pipe.to(dtype=dtype)
            _reset_peak(device)
            generate(pipe, prompts["base"], steps=2, seed=0)  # warm-up
            times: dict[str, list[float]] = {"base": [], "concept": []}
            for _ in range(repeats):
                for kind in ("base", "concept"):
                    _sync(device)
                    t0 = time.perf_counter()
                    concepts = [concept] if kind == "concept" else []
                    generate(pipe, prompts[kind], concepts=concepts, steps=steps, seed=1)
                    _sync(device)
                    times[kind].append(time.perf_counter() - t0)
        except Exception as exc:
            report(f"| {name} | failed: {type(exc).__name__}: {exc} | | | |")
            continue
        finally:
            pipe.to(dtype=torch.float32)
        base, edited = statistics.median(times["base"]), statistics.median(times["concept"])
        rows.append({"dtype": name, "s_per_image_base": base, "s_per_image_concept": edited})
        report(f"| {name} | {base:.2f} | {edited:.2f} | {100 * (edited / base - 1):+.1f}% | "
               f"{_peak_gib(device):.1f} |")  # fmt: skip
    report()
    report.data["generate"] = rows


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="toy widths on the CPU: a smoke run")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda if available")
    parser.add_argument("--arch", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--model", help="a diffusers folder instead of the random SD 1.5 shapes")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per options row")
    parser.add_argument("--fit-steps", type=int, help="the default fit's steps (e2e; default 400)")
    parser.add_argument("--gen-steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=1, help="runs per row (median)")
    parser.add_argument("--compile", action="store_true", help="add a compiled-UNet row/run")
    parser.add_argument("--out", type=Path, help="write gpu-<arch>.md and .json here")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    xl = args.arch == "sdxl"
    size = 64 if args.tiny else 1024 if xl else 512
    fit_steps = args.fit_steps or (4 if args.tiny else FULL_FIT_STEPS)
    sample_steps = 2 if args.tiny else args.gen_steps
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    out.mkdir(parents=True, exist_ok=True)
    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            from workers.perfusion import load_pipeline

            pipe = load_pipeline(args.model, device, dtype=torch.float32)
            size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        elif xl:
            pipe = make_sdxl_pipeline(Path(tmp) / "tokenizer", tiny=args.tiny, device=device)
        else:
            pipe = make_sd15_pipeline(Path(tmp) / "tokenizer", tiny=args.tiny).to(device)
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        t0 = time.perf_counter()
        cov = compute_covariance(pipe, read_captions()[: 256 if args.tiny else 2000])
        cov_s = time.perf_counter() - t0
        name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
        threads = "" if device == "cuda" else f", {torch.get_num_threads()} CPU threads"
        shape = args.model or args.arch + (", tiny" * args.tiny)
        report(f"# Perfusion fit benchmark ({shape}) on "
               f"{name}, torch {torch.__version__}{threads}, load average "
               f"{os.getloadavg()[0]:.1f}, {size} px, covariance {cov_s:.1f} s")  # fmt: skip
        report()
        batch, accum = default_batch(args.arch.replace("15", ""), device == "cuda")
        base = FitConfig(batch_size=batch, grad_accum=accum, resolution=size, seed=0)
        if device == "cuda":
            pipe.to(dtype=torch.float16)  # as production loads it; the fit upcasts to fp32
        fast = base
        step_s = None
        if "options" in sections:
            fast = bench_options(
                report, pipe, cov, base, device, args.steps, size, args.compile, args.repeats
            )
            step_s = report.data["options"][0]["s_per_step"]
        if "phases" in sections:
            bench_phases(report, pipe, cov, base, device, max(2, args.steps // 2), size, step_s)
        pipe.to(dtype=torch.float32)
        if "e2e" in sections and not xl:
            variants = {"default": {}}
            settings = _settings_for(fast, base)
            if settings:
                variants["kept options"] = settings
            if args.compile:
                variants["kept options + compiled UNet"] = {**settings, "STUDIO_COMPILE_UNET": "1"}
            captions = 256 if args.tiny else 2000
            bench_end_to_end(
                report, pipe, device, size, fit_steps, sample_steps, variants, out, captions
            )
        concept = None
        if "variants" in sections:
            concept = bench_variants(report, pipe, cov, device, xl, args.steps, size)
        if "generate" in sections:
            if concept is None:
                concept = fit_concept(pipe, _images(4, size), "<bench>", "dog",
                                      replace(base, steps=2), cov)  # fmt: skip
            bench_generate(report, pipe, concept, device, sample_steps, args.repeats)
    stem = f"gpu-{args.arch}{'-tiny' if args.tiny else ''}"
    (out / f"{stem}.md").write_text("\n".join(report.lines) + "\n")
    payload = json.dumps({"device": name, "arch": args.arch, "rows": report.data}, indent=2,
                         default=str)  # fmt: skip
    (out / f"{stem}.json").write_text(payload)
    if args.json:
        args.json.write_text(payload)
    print(f"wrote {out / stem}.md and .json", file=sys.stderr)
    return 0


def _settings_for(fast: FitConfig, base: FitConfig) -> dict[str, str]:
    """The studio's environment for the options `fast` adds to `base`."""
    env = {}
    if fast.channels_last != base.channels_last:
        env["STUDIO_FIT_CHANNELS_LAST"] = "1"
    if fast.frozen_dtype != base.frozen_dtype:
        env["STUDIO_FIT_FROZEN_DTYPE"] = fast.frozen_dtype
    if fast.fused_adamw != base.fused_adamw:
        env["STUDIO_FIT_FUSED_ADAMW"] = "1"
    return env


if __name__ == "__main__":
    raise SystemExit(main())
