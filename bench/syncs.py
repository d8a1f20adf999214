"""Does a steady-state fit step wait for the GPU? `torch.cuda.set_sync_debug_mode` says.

    python -m bench.syncs          # CUDA: tiny SD 1.5- and SDXL-shaped fits, fp16 as production

Turns the mode to "warn" from the third step to the one before the last of a fit without
callbacks (no progress points in between) and counts the synchronizing CUDA calls torch
reports. The CPU has no such mode: there tests/unit/perfusion/test_host_syncs.py counts the
host reads that would sync instead.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch

from bench.gpu import _images
from bench.sd15 import make_sd15_pipeline
from bench.sdxl import make_sdxl_pipeline
from workers.perfusion import FitConfig, compute_covariance, fit_concept
from workers.perfusion.covariance import read_captions


def count_syncs(pipe, steps: int = 12) -> list[str]:  # type: ignore[no-untyped-def]
    """Messages of the synchronizing calls made in steps 3 .. steps-1 of a fit."""
    import workers.perfusion.fit as fit

    cov = compute_covariance(pipe, read_captions()[:256])
    config = FitConfig(steps=steps, batch_size=2, grad_accum=1, resolution=64, seed=0)
    micro_step, calls = fit._micro_step, [0]

    def spy(*args):  # type: ignore[no-untyped-def]
        torch.cuda.set_sync_debug_mode("warn" if 2 <= calls[0] < steps - 1 else "default")
        calls[0] += 1
        return micro_step(*args)

    fit._micro_step = spy
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit_concept(pipe, _images(2, 64), "<sync>", "dog", config, cov)
    finally:
        fit._micro_step = micro_step
        torch.cuda.set_sync_debug_mode("default")
    return [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="accepted for gpu_check.sh")
    parser.parse_args(argv)
    print("\nHost syncs in steady-state fit steps (torch.cuda.set_sync_debug_mode):\n")
    if not torch.cuda.is_available():
        print("no CUDA here: tests/unit/perfusion/test_host_syncs.py covers the CPU")
        return 0
    print("| pipeline | synchronizing calls in steps 3..11 |\n|---|---|")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        pipes = {
            "SD 1.5-shaped (tiny), fp16": make_sd15_pipeline(Path(tmp) / "sd", tiny=True)
            .to("cuda")
            .to(torch.float16),
            "SDXL-shaped (tiny), fp16": make_sdxl_pipeline(Path(tmp) / "xl", tiny=True,
                                                           device="cuda").to(torch.float16),
        }  # fmt: skip
        for label, pipe in pipes.items():
            found = count_syncs(pipe)
            failed |= bool(found)
            print(f"| {label} | {len(found)} {sorted(set(found))[:3] if found else ''} |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
