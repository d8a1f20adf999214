"""Could any Perfusion fit learn a subject on this model? The value oracle, against a real fit.

    python -m bench.oracle_value [--model workers/toyworld/model] [--subjects candy purple-star]

For each subject, images of "a <x> on a {unseen} background" are read back by the toy-world
reader under three concepts, and beside them the words that describe the subject:

- "words": the prompt naming shape, colour and pattern ("a striped red circle on a …").
- "oracle": a concept whose o*_V in every layer is W_v times the encoding the words give the
  shape's noun ("circle" in "a striped red circle"), key locked to the superclass as always:
  the best value a fit could find if the UNet read a subject's look from its noun's value.
  A breed word (world.BREEDS) as the subject: its own word is the noun, its shape the superclass.
- "fit": the quick probe's fit (80 steps × batch 4 from 4 photos, bench.quality.quick).

If the oracle does not draw the subject, no recipe can make Perfusion learn on this model: the
model reads the look from somewhere other than the noun's value (see bench.text_pathway).
"""

from __future__ import annotations

import argparse
import dataclasses
import random

import torch
import torch.nn.functional as F

from bench.quality.settings import DEFAULT_MODEL, TRAIN_BACKGROUNDS, subject
from workers.toyworld.world import (
    BACKGROUNDS,
    BREEDS,
    Look,
    Scene,
    object_phrase,
    render,
    sample_placement,
)


def _target(name: str) -> tuple[Look, str, str]:
    """(look, superclass, the words that describe it): a harness or known subject, or a breed
    word (its words are the breed word itself, its superclass its shape)."""
    if name in BREEDS:
        return BREEDS[name], BREEDS[name].shape, name
    look = subject(name).look
    return look, subject(name).superclass, object_phrase(look, name_pattern=True)


def _hits(pipe, prompt_of, look, seed: int, concepts=(), controls=None) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from workers.perfusion import generate
    from workers.toyworld.reader import read_attributes

    reads = []
    for k, bg in enumerate(prompt_of):
        images = generate(
            pipe, prompt_of[bg], list(concepts), controls=controls, seed=1000 + seed * 10 + k,
            steps=20, guidance=4.0, n=4,
        )  # fmt: skip
        reads += [read_attributes(image) for image in images]
    keys = ("shape", "color", "pattern", "second")
    out = {k: sum(getattr(r, k) == getattr(look, k) for r in reads) / len(reads) for k in keys}
    out["all"] = sum(r.matches(look) for r in reads) / len(reads)
    return out


def main(argv: list[str] | None = None) -> None:
    from workers.perfusion import FitConfig, fit_concept, get_covariance, load_pipeline
    from workers.perfusion.apply import strength_to_control
    from workers.perfusion.pipeline import cross_attention_layers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--subjects", nargs="+", default=["candy", "tile", "purple-star"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-steps", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, "cpu")
    covariance = get_covariance(pipe)
    tok = pipe.tokenizer
    print("| subject | row | strength | shape | colour | pattern | second | all |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.subjects:
        look, superclass, phrase = _target(name)
        train_bgs = [b for b in TRAIN_BACKGROUNDS if b not in look.colors][:2]
        test_bgs = [b for b in BACKGROUNDS if b not in look.colors and b not in train_bgs][:2]
        rng = random.Random(f"{name}-{args.seed}")
        images = [render(Scene(look, train_bgs[k % 2], *sample_placement(rng))) for k in range(4)]
        words = {bg: f"a {phrase} on a {bg} background" for bg in test_bgs}
        concept_prompts = {bg: f"a <x> on a {bg} background" for bg in test_bgs}

        def row(label: str, strength: str, hits: dict[str, float], name: str = name) -> None:
            cells = " | ".join(f"{hits[k]:.2f}" for k in ("shape", "color", "pattern", "second"))
            print(f"| {name} | {label} | {strength} | {cells} | {hits['all']:.2f} |", flush=True)

        with torch.no_grad():
            row("words", "-", _hits(pipe, words, look, args.seed))
        torch.manual_seed(args.seed)
        config = FitConfig(steps=args.fit_steps, batch_size=4, flip_p=0.0, seed=args.seed)
        fitted = fit_concept(pipe, images, "<x>", superclass, config, covariance)
        ids = tok(f"a {phrase}", return_tensors="pt").input_ids
        noun = int(ids.shape[1]) - 2  # the last real token before end-of-text
        with torch.no_grad():
            padded = tok(f"a {phrase}", padding="max_length", max_length=tok.model_max_length,
                         truncation=True, return_tensors="pt").input_ids  # fmt: skip
            encoding = pipe.text_encoder(padded)[0][0, noun].float()
            values = {
                layer: F.linear(encoding, attn.to_v.weight.float())
                for layer, attn in cross_attention_layers(pipe.unet).items()
            }
            oracle = dataclasses.replace(fitted, o_v=values)
            for strength in (0.5, 1.0):
                controls = [strength_to_control(strength)]
                for label, concept in (("oracle", oracle), (f"fit {args.fit_steps}", fitted)):
                    hits = _hits(pipe, concept_prompts, look, args.seed, [concept], controls)
                    row(label, f"{strength}", hits)


if __name__ == "__main__":
    main()
