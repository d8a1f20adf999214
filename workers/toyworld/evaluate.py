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
from workers.toyworld.world import BREEDS, caption, sample_breed_scene, sample_scene

MODEL_DIR = Path(__file__).parent / "model"
STEPS = 20
GUIDANCE = 4.0


def load_pipeline(folder: Path = MODEL_DIR) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


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
    generator = torch.Generator().manual_seed(seed)
    hits = {"shape": 0, "color": 0, "pattern": 0, "background": 0, "all": 0}
    for start in range(0, n, batch):
        images = pipe(
            prompts[start : start + batch],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
        ).images
        for scene, image in zip(scenes[start : start + batch], images, strict=True):
            read = read_attributes(image)
            ok = {
                "shape": read.shape == scene.shape,
                "color": read.color == scene.color,
                "pattern": read.pattern == scene.look.pattern,
                "background": read.background == scene.background,
            }
            ok["all"] = all(ok.values())
            for key, value in ok.items():
                hits[key] += value
    return {key: value / n for key, value in hits.items()}


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
    names = {look: word for word, look in BREEDS.items()}
    prompts = [f"a {names[s.look]} on a {s.background} background" for s in scenes]
    generator = torch.Generator().manual_seed(seed)
    keys = ("shape", "color", "pattern", "second", "background", "all")
    hits = dict.fromkeys(keys, 0)
    for start in range(0, n, batch):
        images = pipe(
            prompts[start : start + batch],
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
        ).images
        for scene, image in zip(scenes[start : start + batch], images, strict=True):
            read = read_attributes(image)
            ok = {
                "shape": read.shape == scene.shape,
                "color": read.color == scene.color,
                "pattern": read.pattern == scene.look.pattern,
                "second": read.second == scene.look.second,
                "background": read.background == scene.background,
            }
            ok["all"] = all(ok.values())
            for key, value in ok.items():
                hits[key] += value
    return {key: value / n for key, value in hits.items()}


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
