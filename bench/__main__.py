"""Run every CPU benchmark and regenerate docs/benchmarks.md.

    python -m bench [--quick] [--no-web] [--out docs/benchmarks.md]

Order matters: the quality harness forks its workers before this process runs any torch
code. The fit table is read from the quality harness's own runs (not measured twice).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.common import ROOT, human_bytes, machine, machine_header, table, verdict
from bench.quality import QualityReport, Settings, quick_settings, run_quality


def fit_table(report: QualityReport) -> str:
    """Fit wall time and memory per method, relative to DreamBooth, from the quality run."""
    db = report.row("dreambooth")
    rows = []
    for r in report.rows:
        if r.method is None:
            continue
        rows.append(
            [
                r.label,
                r.recipe,
                f"{r.fit_s:.1f}",
                f"{r.fit_s / db.fit_s:.2f}×",
                f"{r.peak_rss_mib:.0f}" if r.peak_rss_mib is not None else "–",
                f"{r.fit_rss_delta_mib:.0f}" if r.fit_rss_delta_mib is not None else "–",
                f"{r.fit_rss_delta_mib / db.fit_rss_delta_mib:.2f}×"
                if r.fit_rss_delta_mib is not None and db.fit_rss_delta_mib
                else "–",
                f"{r.concept_fidelity:.3f}",
                f"{r.prompt_fidelity:.3f}",
                human_bytes(r.artefact_bytes),
            ]
        )
    headers = [
        "Method", "Recipe", "Fit time (s)", "Time vs DreamBooth", "Peak RSS (MiB)",
        "Fit Δ RSS (MiB)", "Δ RSS vs DreamBooth", "Concept fidelity", "Prompt fidelity",
        "Artefact",
    ]  # fmt: skip
    p = report.row("perfusion")
    time_ratio = p.fit_s / db.fit_s
    mem_ok = (
        p.fit_rss_delta_mib is not None
        and db.fit_rss_delta_mib is not None
        and p.fit_rss_delta_mib < db.fit_rss_delta_mib
    )
    base = next(r for r in report.rows if r.label.startswith("Reference: base model"))
    learned = p.concept_fidelity > base.concept_fidelity
    reached = p.concept_fidelity >= 0.9 * db.concept_fidelity
    met = time_ratio < 1.0 and mem_ok and learned and reached
    why = ""
    if not learned:
        why = (
            f" Perfusion's concept fidelity ({p.concept_fidelity:.3f}) does not exceed the base "
            f"model's on the bare superclass prompt ({base.concept_fidelity:.3f}): it did not "
            "learn the concepts, so there is no fidelity to reach, however cheap the fit."
        )
    elif not reached:
        why = " Perfusion's concept fidelity is below 90 % of DreamBooth's."
    mem_text = (
        f"{p.fit_rss_delta_mib:.0f} vs {db.fit_rss_delta_mib:.0f} MiB above the loaded pipeline"
        if p.fit_rss_delta_mib is not None and db.fit_rss_delta_mib is not None
        else "memory not measured (in-process run)"
    )
    goal = (
        "Goal: Perfusion reaches its fidelity in a fraction of DreamBooth's time and memory — "
        f"{verdict(met)}: time {time_ratio:.2f}× DreamBooth's, {mem_text}; concept fidelity "
        f"{p.concept_fidelity:.3f} vs {db.concept_fidelity:.3f}, prompt fidelity "
        f"{p.prompt_fidelity:.3f} vs {db.prompt_fidelity:.3f}. Same runs as the quality table "
        "(mean fit time over its concepts; peak over them). Met means: time and Δ memory "
        "below DreamBooth's, fidelity above the base model's and at least 90 % of "
        "DreamBooth's." + why
    )
    return table(headers, rows) + "\n\n" + goal + "\n"


def gpu_section() -> str:
    """The last GPU run's printed tables (`python -m bench.gpu` needs CUDA, so it is not rerun
    here), kept in bench/results/ with its machine line, and the goals judged from its JSON."""
    results = ROOT / "bench" / "results"
    if not (results / "gpu-h200.json").exists():
        return "### GPU\n\nNo GPU run recorded yet: run `python -m bench.gpu` on a CUDA machine.\n"
    rows = json.loads((results / "gpu-h200.json").read_text())["rows"]
    best = min(rows["fit"], key=lambda r: r["projected_full_fit_s"])
    bf16 = next(r for r in rows["generate"] if r["dtype"] == "bf16")
    fit_met = best["projected_full_fit_s"] < 60
    gen_met = bf16["concept_overhead"] <= 0.03
    return (
        "### GPU: SD 1.5-shaped pipeline (random weights) at 512 px\n\n"
        "Recorded by `python -m bench.gpu` on a lent GPU (first line); re-measure with the same "
        "command on any CUDA machine. The fit rows differ only in how the effective batch of 16 "
        "is run and in the frozen weights' dtype.\n\n"
        + (results / "gpu-h200.txt").read_text().strip()
        + "\n\nGoal: a full default fit (400 steps) in under 60 s on one H100/H200 (the paper "
        f"reports about 4 minutes) — {verdict(fit_met)}: {best['projected_full_fit_s']:.0f} s "
        f"projected with {best['variant']} ({best['s_per_step']:.3f} s/step). "
        "Goal: at most 3 % slower generation with one concept — "
        f"{verdict(gen_met)} in bf16: {100 * bf16['concept_overhead']:+.1f} %.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run all CPU benchmarks; rewrite the docs.")
    parser.add_argument("--quick", action="store_true", help="small settings (development)")
    parser.add_argument("--no-web", action="store_true", help="skip the web load test")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=str(ROOT / "workers" / "toyworld" / "model"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    info = machine()
    settings = quick_settings() if args.quick else Settings()
    settings.model, settings.threads = args.model, args.threads
    sections: list[str] = []

    report = run_quality(settings)
    sections.append(report.render())
    sections.append("### Fit time and memory (from the quality runs)\n\n" + fit_table(report))
    print(sections[0], flush=True)

    from bench import generation, size

    gen = generation.run_generation(
        args.model, reps=3 if args.quick else 5, steps=settings.gen_steps, threads=args.threads
    )
    sections.append("### Generation overhead of applied concepts\n\n" + generation.render(gen))
    sections.append(
        "### Artefact size per concept\n\n" + size.render(size.run_size(Path(args.model)))
    )

    from bench import web_load

    if args.no_web:
        sections.append("### Web load test\n\nSkipped (--no-web).\n")
    else:
        sections.append("### Web load test\n\n" + web_load.run_section(quick=args.quick))

    sections.append(gpu_section())

    total = time.perf_counter() - started
    text = (
        "# Benchmarks\n\n"
        "Generated by `python -m bench` — do not edit by hand; rerun it. CPU only, on a shared "
        "machine: absolute times are noisy, ratios measured within one run are what count.\n\n"
        + machine_header(info)
        + f" Total run time: {total / 60:.1f} min"
        + (" (--quick settings)" if args.quick else "")
        + ".\n\n"
        + "\n".join(sections)
    )
    print("\n".join(sections[1:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} in {total / 60:.1f} min")


if __name__ == "__main__":
    main()
