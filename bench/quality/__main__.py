"""python -m bench.quality: run the harness and print its tables."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from bench.common import machine_header
from bench.quality import Settings, quick_settings, run_quality
from bench.quality.settings import DEFAULT_MODEL, LR_SCALE, SUBJECT_SETS, full_recipes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 subjects, fewer steps (minutes)")
    parser.add_argument("--subjects", choices=sorted(SUBJECT_SETS), default="harness")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--in-process", action="store_true", help="no subprocesses (no memory)")
    parser.add_argument("--keep", type=Path, help="keep images and artefacts in this folder")
    parser.add_argument("--json", type=Path, help="also write the rows and sweep here")
    parser.add_argument(
        "--lr-scale", type=float, help=f"every method's SD 1.5 lr times this (default {LR_SCALE})"
    )
    parser.add_argument(
        "--methods", nargs="+", metavar="KEY",
        help="only these recipes (keys of full_recipes, e.g. perfusion_b16 lora_b16); the "
        "references always run",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = quick_settings() if args.quick else Settings()
    if not args.quick or args.subjects != "harness":
        settings.subjects = list(SUBJECT_SETS[args.subjects])
    settings.model, settings.threads = args.model, args.threads
    if args.lr_scale is not None:
        if args.quick:
            parser.error("--lr-scale applies to the full recipes, not --quick")
        settings.recipes = full_recipes(args.lr_scale)
    if args.methods:
        unknown = sorted(set(args.methods) - set(settings.recipes))
        if unknown:
            parser.error(f"unknown methods {unknown}; known: {sorted(settings.recipes)}")
        settings.recipes = {k: v for k, v in settings.recipes.items() if k in args.methods}
    report = run_quality(settings, isolate=not args.in_process, workdir=args.keep)
    print(machine_header())
    print()
    print(report.render())
    if args.json:
        data = {"rows": [asdict(r) for r in report.rows], "sweep": report.sweep}
        args.json.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
