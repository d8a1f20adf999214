"""Does a pipeline know the toy world? Generate from fresh captions and read the images back.

python -m workers.toyworld.evaluate [--model workers/toyworld/model] [--n 100]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from workers.toyworld.reader import read_attributes
from workers.toyworld.world import (
    BREEDS,
    Scene,
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
    generator = torch.Generator().manual_seed(seed)
    hits = dict.fromkeys((*attributes, "all"), 0)
    for start in range(0, len(scenes), batch):
        images = pipe(
            prompts[start : start + batch],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
        ).images
        for scene, image in zip(scenes[start : start + batch], images, strict=True):
            read = read_attributes(image)
            ok = {key: _CHECKS[key](read, scene) for key in attributes}
            ok["all"] = all(ok.values())
            for key, value in ok.items():
                hits[key] += value
    return {key: value / len(scenes) for key, value in hits.items()}


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
    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    prompts = [caption(s, rng, complete=True) for s in scenes]
    attributes = ("shape", "color", "pattern", "background")
    return _accuracy(pipe, scenes, prompts, attributes, seed, steps, guidance, batch)


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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model).to(args.device)
    start = time.monotonic()
    measure = breed_accuracy if args.breeds else knowledge_accuracy
    result = measure(pipe, args.n, args.seed, args.steps, args.guidance)
    result["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
