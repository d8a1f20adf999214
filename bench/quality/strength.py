"""The strength slider over many fits: hit rate, background and drift per strength.

    python -m bench.quality.strength [--subjects candy dotty tile flag] [--seeds 0 1] [--n 8]
        [--strengths 0 0.25 0.5 0.75 1] [--fit FIELD=VALUE ...]

The harness sweeps one fit per subject, and a quick fit mostly either learns its subject or
does not (hit rates near 0 or 0.9), so its sweep says little about what the slider adds above
the default. This fits each subject once per seed as the studio does, then generates 2 × n
images per fit at each strength on two unseen backgrounds, and the concept-free drift prompts
at each strength (2 images each, against the base model on the same seeds).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from bench.common import machine_header, table
from bench.quality.quick import ATTRIBUTES, attribute_fractions, fit_option
from bench.quality.settings import DEFAULT_MODEL, SWEEP, backgrounds, drift_prompts, subject


@dataclass(frozen=True)
class Point:
    subject: str
    seed: int
    strength: float
    hits: float  # fraction of images in which the reader finds the whole subject
    on_background: float  # fraction on the asked-for unseen background
    drift: float  # mean |Δ| pixel (0-255) on the two concept-free prompts, vs the base model
    attributes: dict[str, float]  # per attribute, the fraction of images that have the subject's


def sweep_fit(  # type: ignore[no-untyped-def]
    pipe, covariance, name: str, seed: int, n: int, strengths=SWEEP, fit_options=None
) -> list[Point]:
    """Fit `name` (seed; `fit_options`: FitConfig fields over the studio's), then measure
    each strength."""
    import torch

    from bench.quality.quick import studio_fit
    from workers.perfusion import generate
    from workers.perfusion.apply import strength_to_control
    from workers.toyworld.reader import read_attributes

    concept, _, _ = studio_fit(pipe, covariance, name, seed, fit_options=fit_options)
    look = subject(name).look
    _, test_bgs = backgrounds(name, 2)
    gen = dict(steps=20, guidance=4.0)
    with torch.no_grad():
        base = {
            p: [np.asarray(im, np.float32) for im in generate(pipe, p, seed=7, n=2, **gen)]
            for p in drift_prompts(name)
        }
        points = []
        for strength in strengths:
            control = [strength_to_control(strength)]
            hits, on_bg, reads = [], [], []
            for k, bg in enumerate(test_bgs):
                prompt = f"a {concept.token} on a {bg} background"
                seed_k = 1000 + seed * 10 + k
                for im in generate(
                    pipe, prompt, [concept], controls=control, seed=seed_k, n=n, **gen
                ):
                    read = read_attributes(im)
                    reads.append(read)
                    hits.append(read.matches(look))
                    on_bg.append(read.background == bg)
            drift = [
                float(np.abs(np.asarray(im, np.float32) - ref).mean())
                for p, refs in base.items()
                for im, ref in zip(
                    generate(pipe, p, [concept], controls=control, seed=7, n=2, **gen),
                    refs,
                    strict=True,
                )
            ]
            points.append(
                Point(
                    name,
                    seed,
                    strength,
                    float(np.mean(hits)),
                    float(np.mean(on_bg)),
                    float(np.mean(drift)),
                    attribute_fractions(reads, look),
                )
            )
    return points


def sweep_table(points: list[Point]) -> str:
    """Per strength: mean hit rate, background and drift over all fits, and fits' hit rates."""
    rows = []
    for strength in sorted({p.strength for p in points}):
        at = [p for p in points if p.strength == strength]
        rows.append(
            [
                f"{strength:.2f}",
                f"{np.mean([p.hits for p in at]):.3f}",
                f"{np.mean([p.on_background for p in at]):.3f}",
                f"{np.mean([p.drift for p in at]):.2f}",
                " / ".join(f"{np.mean([p.attributes[a] for p in at]):.2f}" for a in ATTRIBUTES),
                " ".join(f"{p.hits:.2f}" for p in at),
            ]
        )
    header = [
        "Strength",
        "Concept fidelity ↑ (hit rate)",
        "Prompt fidelity ↑",
        "Drift (concept-free)",
        "Shape / colour / pattern / 2nd colour",
        "Per fit",
    ]
    return table(header, rows)


def main(argv: list[str] | None = None) -> None:
    import torch

    from workers.perfusion import get_covariance, load_pipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", nargs="+", default=["candy", "dotty", "tile", "flag"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n", type=int, default=8, help="images per background per strength")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--strengths", type=float, nargs="+", default=list(SWEEP))
    parser.add_argument(
        "--fit", action="append", default=[], metavar="FIELD=VALUE",
        help="a FitConfig field for every fit, e.g. --fit separation=1.0 (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    fit_options = dict(fit_option(text) for text in args.fit)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, "cpu")
    covariance = get_covariance(pipe)
    points = []
    for name in args.subjects:
        for seed in args.seeds:
            points += sweep_fit(pipe, covariance, name, seed, args.n, args.strengths, fit_options)
            print(f"[strength] {name} seed {seed} done", flush=True)
    first = args.strengths[0]
    fits = ", ".join(f"{p.subject} seed {p.seed}" for p in points if p.strength == first)
    print(machine_header())
    print(f"Fits (the per-fit column's order): {fits}\n")
    print(sweep_table(points))


if __name__ == "__main__":
    main()
