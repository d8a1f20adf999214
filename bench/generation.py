"""Generation overhead of applied concepts: base pipeline vs 1 and 3 Perfusion concepts.

    python -m bench.generation [--model workers/toyworld/model] [--reps 4] [--steps 20]

Same prompt template, seed, steps, guidance and batch for every configuration; runs are
interleaved (the order rotates each repetition) so slow phases of a shared machine hit all
configurations alike. Concepts are real `fit_concept` outputs (a few steps: speed does not
depend on how well they are trained) and are applied per call through `generate`, as the
worker does. Reported: median images/s per configuration and the ratio of median times.
Goal: at most 3 % slower with one concept.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import ROOT, machine_header, quiet, table, verdict

GOAL_SLOWDOWN = 0.03
CONFIGS = (0, 1, 3)


@dataclass
class GenerationResult:
    images_per_call: int
    steps: int
    reps: int
    threads: int
    resolution: int
    seconds: dict[int, list[float]] = field(default_factory=dict)

    def median(self, k: int) -> float:
        return statistics.median(self.seconds[k])

    def slowdown(self, k: int) -> float:
        """Median time with k concepts / median base time − 1."""
        return self.median(k) / self.median(0) - 1.0


def fit_tiny_concepts(pipe, count: int, seed: int = 0, captions: list[str] | None = None):
    """`count` real concepts fitted for 2 steps each on toy-world photos."""
    import random

    from workers.perfusion import FitConfig, fit_concept, get_covariance
    from workers.toyworld.world import SUBJECTS, render_subject
    from workers.toyworld.world import captions as world_captions

    covariance = get_covariance(
        pipe, captions=captions or world_captions(500, seed), cache_dir=Path("/tmp/bench-cov")
    )
    config = FitConfig(steps=2, batch_size=1, grad_accum=1, seed=seed)
    concepts = []
    for k, name in enumerate(list(SUBJECTS)[:count]):
        spec = SUBJECTS[name]
        photos = [render_subject(name, "gray", random.Random(f"{name}-{j}")) for j in range(2)]
        concepts.append(fit_concept(pipe, photos, f"<c{k}>", spec.superclass, config, covariance))
    return concepts


def run_generation(
    model: str, reps: int = 4, steps: int = 20, n: int = 4, threads: int = 1, seed: int = 0
) -> GenerationResult:
    import torch

    from workers.perfusion import generate, load_pipeline

    torch.set_num_threads(threads)
    quiet()
    pipe = load_pipeline(model, "cpu")
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    concepts = fit_tiny_concepts(pipe, max(CONFIGS), seed)
    prompts = {
        0: "a circle on a black background",
        1: "a <c0> on a black background",
        3: "a <c0> on a black background",  # the other two applied but unused, as in a session
    }
    result = GenerationResult(n, steps, reps, threads, size, {k: [] for k in CONFIGS})
    with torch.no_grad():
        generate(pipe, prompts[0], seed=seed, steps=2, n=n)  # warm-up
        for rep in range(reps):
            order = CONFIGS[rep % len(CONFIGS) :] + CONFIGS[: rep % len(CONFIGS)]
            for k in order:
                started = time.perf_counter()
                generate(pipe, prompts[k], concepts[:k], seed=seed, steps=steps, n=n, guidance=4.0)
                result.seconds[k].append(time.perf_counter() - started)
    return result


def render(result: GenerationResult) -> str:
    rows = []
    for k in CONFIGS:
        rows.append(
            [
                "base pipeline" if k == 0 else f"{k} concept{'s' if k > 1 else ''} applied",
                f"{result.images_per_call / result.median(k):.3f}",
                f"{result.median(k):.2f}",
                f"{min(result.seconds[k]):.2f}–{max(result.seconds[k]):.2f}",
                "1.000" if k == 0 else f"{1 + result.slowdown(k):.3f}",
                "–" if k == 0 else f"{100 * result.slowdown(k):+.1f} %",
            ]
        )
    headers = ["Configuration", "Images/s (median)", "s per call (median)", "s per call (range)",
               "Time ratio vs base", "Slowdown"]  # fmt: skip
    one = result.slowdown(1)
    goal = (
        f"Goal: at most 3 % slower with one concept — {verdict(one <= GOAL_SLOWDOWN)} "
        f"({100 * one:+.1f} %). {result.reps} interleaved repetitions of {result.images_per_call} "
        f"images × {result.steps} DDIM steps, guidance 4.0 (CFG batch 2×), "
        f"{result.resolution}×{result.resolution} px, "
        f"{result.threads} torch thread(s); concepts applied and removed inside each call."
    )
    return table(headers, rows) + "\n\n" + goal + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generation speed with concepts applied.")
    parser.add_argument("--model", default=str(ROOT / "workers" / "toyworld" / "model"))
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    result = run_generation(args.model, args.reps, args.steps, threads=args.threads)
    print(machine_header())
    print()
    print(render(result))


if __name__ == "__main__":
    main()
