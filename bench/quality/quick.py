"""Does a quick Perfusion fit learn a held-out subject? One fit, images read back, in a minute.

    python -m bench.quality.quick [--subject tile] [--seeds 0 1 2] [--steps 80]

The suite's learning-regression test (tests/unit/toyworld/test_fit_learns_a_subject.py) calls
`probe` once; this command runs it over several seeds to set that test's bound from measurement.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from bench.quality.settings import DEFAULT_MODEL, DEFAULT_STRENGTH, backgrounds, photos, subject
from bench.quality.settings import superclass_prompt as base_prompt

ATTRIBUTES = ("shape", "color", "pattern", "second")


@dataclass(frozen=True)
class Probe:
    subject: str
    seed: int
    steps: int
    concept_hits: float  # fraction of concept images in which the reader finds the subject
    base_hits: float  # the same for the base model's superclass prompt, same seeds
    prompt_hits: float  # fraction of concept images on the asked-for (unseen) background
    fit_s: float
    attributes: dict[str, float]  # per attribute, the fraction of concept images that have it
    base_attributes: dict[str, float]  # the same for the base model's superclass prompt
    photo_loss: float | None = None  # workers.perfusion.photo_loss at `strength`, when asked for


def probe(
    name: str = "tile",
    seed: int = 0,
    steps: int = 80,
    n: int = 4,
    model: str | Path = DEFAULT_MODEL,
    gen_steps: int = 20,
    guidance: float = 4.0,
    keep: Path | None = None,
    lr_scale: float = 1.0,
    strength: float = DEFAULT_STRENGTH,
    fit_options: dict | None = None,
    measure_photo_loss: bool = False,
) -> Probe:
    """Fit `name` from 4 photos as the studio does (`studio_fit`), then generate n images
    on each of two unseen backgrounds with the concept and with the superclass prompt; `keep`
    saves one strip per seed: the photos, then the concept's and the base's images."""
    import torch

    from workers.perfusion import generate, get_covariance, load_pipeline
    from workers.perfusion.apply import strength_to_control
    from workers.toyworld.reader import read_attributes

    pipe = load_pipeline(str(model), "cpu")
    covariance = get_covariance(pipe)  # the model folder's own captions.txt, as in production
    concept, images, fit_s = studio_fit(pipe, covariance, name, seed, steps, lr_scale, fit_options)
    _, test_bgs = backgrounds(name, 2)
    token = concept.token
    loss = None
    if measure_photo_loss:
        from workers.perfusion.photo_loss import photo_loss

        loss = round(photo_loss(pipe, concept, images, strength=strength), 5)
    look = subject(name).look
    control = strength_to_control(strength)
    concept_reads, base_reads, on_bg = [], [], []
    strip = list(images)
    reads, base_attrs = [], []
    with torch.no_grad():
        for k, bg in enumerate(test_bgs):
            common = dict(seed=1000 + seed * 10 + k, steps=gen_steps, guidance=guidance, n=n)
            prompt = f"a {token} on a {bg} background"
            made = generate(pipe, prompt, [concept], controls=[control], **common)
            base = generate(pipe, base_prompt(name, bg), **common)
            strip += made + base
            for image in made:
                read = read_attributes(image)
                concept_reads.append(read.matches(look))
                on_bg.append(read.background == bg)
                reads.append(read)
            for image in base:
                read = read_attributes(image)
                base_reads.append(read.matches(look))
                base_attrs.append(read)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        sheet = Image.new("RGB", (64 * len(strip), 64))
        for k, image in enumerate(strip):
            sheet.paste(image.resize((64, 64)), (64 * k, 0))
        sheet.save(keep / f"{name}-seed{seed}.png")
    return Probe(
        subject=name,
        seed=seed,
        steps=steps,
        concept_hits=sum(concept_reads) / len(concept_reads),
        base_hits=sum(base_reads) / len(base_reads),
        prompt_hits=sum(on_bg) / len(on_bg),
        fit_s=round(fit_s, 1),
        attributes=attribute_fractions(reads, look),
        base_attributes=attribute_fractions(base_attrs, look),
        photo_loss=loss,
    )


def studio_fit(  # type: ignore[no-untyped-def]
    pipe,
    covariance,
    name: str,
    seed: int,
    steps: int = 80,
    lr_scale: float = 1.0,
    fit_options: dict | None = None,
):
    """Fit `name` from 4 photos on its training backgrounds as the studio does on this model
    (the folder's rates, accumulation and restarts at the CPU batch of 4); return (concept,
    photos, fit seconds)."""
    import torch

    from workers.perfusion import FitConfig, base_fit_defaults, fit_concept

    train_bgs, _ = backgrounds(name, 2)
    images, _ = photos(name, 4, seed, train_bgs)
    folder = base_fit_defaults(pipe)  # the model folder's rates, accumulation and restarts
    rates = FitConfig(**folder)
    fields = dict(
        steps=steps,
        batch_size=4,  # the studio's CPU batch (default_batch), accumulated as the folder says
        grad_accum=int(folder.get("grad_accum", 1)),
        lr_embedding=rates.lr_embedding * lr_scale,
        lr_value=rates.lr_value * lr_scale,
        flip_p=0.0,
        seed=seed,
        restarts=rates.restarts,
    )
    config = FitConfig(**{**fields, **(fit_options or {})})
    torch.manual_seed(seed)
    started = time.perf_counter()
    concept = fit_concept(pipe, images, f"<{name}>", subject(name).superclass, config, covariance)
    return concept, images, time.perf_counter() - started


def attribute_fractions(reads: list, look) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Per attribute, and for shape with main colour together, the fraction that has it."""
    out = {
        a: sum(getattr(r, a) == getattr(look, a) for r in reads) / len(reads) for a in ATTRIBUTES
    }
    both = sum(r.shape == look.shape and r.color == look.color for r in reads) / len(reads)
    return {**out, "shape_and_color": both}


def fit_option(text: str) -> tuple[str, object]:
    """`FIELD=VALUE` as (field, value), the value read as JSON where it parses (numbers)."""
    field, _, value = text.partition("=")
    try:
        return field, json.loads(value)
    except json.JSONDecodeError:
        return field, value


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subject", default="tile")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="save a strip of photos and images per seed")
    parser.add_argument(
        "--lr-scale", type=float, default=1.0, help="both of the model's learning rates times"
    )
    parser.add_argument("--strength", type=float, default=DEFAULT_STRENGTH)
    parser.add_argument(
        "--fit", action="append", default=[], metavar="FIELD=VALUE",
        help="a FitConfig field for the fit, e.g. --fit timesteps=stratified (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--photo-loss", action="store_true",
        help="also print the concept's fixed-draw loss on its photos (perfusion.photo_loss)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for seed in args.seeds:
        result = probe(
            args.subject,
            seed,
            args.steps,
            args.n,
            args.model,
            keep=args.keep,
            lr_scale=args.lr_scale,
            strength=args.strength,
            fit_options=dict(fit_option(text) for text in args.fit),
            measure_photo_loss=args.photo_loss,
        )
        print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
