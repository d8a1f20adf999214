"""Does a pipeline know the toy world? Generate from fresh captions and read the images back.

python -m workers.toyworld.evaluate [--model DIR] [--n 100] [--breeds|--patterns|--bare]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from workers.toyworld.reader import Attributes, read_attributes
from workers.toyworld.world import (
    BREEDS,
    PATTERNS,
    Scene,
    article,
    breed_of,
    caption,
    sample_breed_scene,
    sample_scene,
)

MODEL_DIR = Path(__file__).parent / "model"
STEPS = 20
GUIDANCE = 4.0


def load_pipeline(folder: Path = MODEL_DIR) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# How each attribute of a generated image is checked against the scene it was asked for.
_CHECKS = {
    "shape": lambda read, scene: read.shape == scene.shape,
    "color": lambda read, scene: read.color == scene.color,
    "pattern": lambda read, scene: read.pattern == scene.look.pattern,
    "second": lambda read, scene: read.second == scene.look.second,
    "background": lambda read, scene: read.background == scene.background,
}


def _reads(
    pipe: StableDiffusionPipeline,
    scenes: list[Scene],
    prompts: list[str],
    seed: int,
    steps: int,
    guidance: float,
    batch: int,
) -> Iterator[tuple[Scene, Attributes]]:
    """Each scene with what the reader finds in the image generated from its prompt."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, len(scenes), batch):
        images = pipe(
            prompts[start : start + batch],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
        ).images
        yield from zip(scenes[start : start + batch], map(read_attributes, images), strict=True)


def _accuracy(
    pipe: StableDiffusionPipeline,
    scenes: list[Scene],
    prompts: list[str],
    attributes: tuple[str, ...],
    seed: int,
    steps: int,
    guidance: float,
    batch: int,
) -> dict[str, float]:
    """Fraction of the images generated from `prompts` whose read-back `attributes` (and all
    of them together) are their scene's."""
    hits = dict.fromkeys((*attributes, "all"), 0)
    for scene, read in _reads(pipe, scenes, prompts, seed, steps, guidance, batch):
        ok = {key: _CHECKS[key](read, scene) for key in attributes}
        ok["all"] = all(ok.values())
        for key, value in ok.items():
            hits[key] += value
    return {key: value / len(scenes) for key, value in hits.items()}


def _complete_captions(n: int, seed: int) -> tuple[list[Scene], list[str]]:
    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    return scenes, [caption(s, rng, complete=True) for s in scenes]


def knowledge_accuracy(
    pipe: StableDiffusionPipeline,
    n: int = 100,
    seed: int = 0,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    batch: int = 20,
) -> dict[str, float]:
    """Fraction of n generated images whose shape, main colour, pattern, background (and all
    four) match the caption they were generated from. Captions always name all four; the
    second colour is never named, so it is not scored."""
    scenes, prompts = _complete_captions(n, seed)
    attributes = ("shape", "color", "pattern", "background")
    return _accuracy(pipe, scenes, prompts, attributes, seed, steps, guidance, batch)


def bare_noun_accuracy(
    pipe: StableDiffusionPipeline,
    n: int = 100,
    seed: int = 0,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    batch: int = 20,
) -> dict[str, float]:
    """Fraction of n images generated from "a <shape> on a <colour> background" (no main
    colour, no pattern) whose shape and background (and both) are the asked-for ones: whether
    a shape noun alone means its shape, as a Perfusion fit whose superclass is that noun needs
    (its key is the noun's, in prompts that name no colour)."""
    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    prompts = [f"{article(s.shape)} {s.shape} on a {s.background} background" for s in scenes]
    return _accuracy(pipe, scenes, prompts, ("shape", "background"), seed, steps, guidance, batch)


def pattern_confusion(
    pipe: StableDiffusionPipeline,
    n: int = 100,
    seed: int = 0,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    batch: int = 20,
) -> dict[str, dict[str, int]]:
    """For the knowledge test's captions: per pattern asked for, how often the reader finds
    each pattern in the image (which patterns the model confuses, not just how often)."""
    scenes, prompts = _complete_captions(n, seed)
    table = {asked: dict.fromkeys(PATTERNS, 0) for asked in PATTERNS}
    for scene, read in _reads(pipe, scenes, prompts, seed, steps, guidance, batch):
        table[scene.look.pattern][read.pattern] += 1
    return table


def breed_accuracy(
    pipe: StableDiffusionPipeline,
    n: int = 100,
    seed: int = 0,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    batch: int = 20,
) -> dict[str, float]:
    """Fraction of n images generated from "a <breed word> on a <colour> background" whose
    shape, main colour, pattern, second colour, background (and all five) are the breed's:
    whether one word's encoding carries a whole look, second colour included."""
    rng = random.Random(seed)
    words = sorted(BREEDS)
    scenes = [sample_breed_scene(rng, rng.choice(words)) for _ in range(n)]
    prompts = [f"a {breed_of(s.look)} on a {s.background} background" for s in scenes]
    attributes = ("shape", "color", "pattern", "second", "background")
    return _accuracy(pipe, scenes, prompts, attributes, seed, steps, guidance, batch)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure what the toy-world model knows.")
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--guidance", type=float, default=GUIDANCE)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--breeds", action="store_true", help="prompt with breed words instead of attributes"
    )
    parser.add_argument(
        "--patterns", action="store_true", help="print which pattern is read for each asked"
    )
    parser.add_argument(
        "--bare", action="store_true", help="prompt with shape and background only (no colour)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model).to(args.device)
    start = time.monotonic()
    if args.patterns:
        table = pattern_confusion(pipe, args.n, args.seed, args.steps, args.guidance)
        print("| asked \\ read | " + " | ".join(PATTERNS) + " |")
        print("| --- " * (len(PATTERNS) + 1) + "|")
        for asked, row in table.items():
            print(f"| {asked} | " + " | ".join(str(row[p]) for p in PATTERNS) + " |")
        return
    measure = (
        breed_accuracy if args.breeds else bare_noun_accuracy if args.bare else knowledge_accuracy
    )
    result = measure(pipe, args.n, args.seed, args.steps, args.guidance)
    result["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
