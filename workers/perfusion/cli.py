"""The `perfusion` command: covariance, fit, generate, info."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _cmd_covariance(args: argparse.Namespace) -> None:
    from .covariance import get_covariance, read_captions
    from .pipeline import load_pipeline

    pipe = load_pipeline(args.base, _device())
    captions = read_captions(Path(args.captions)) if args.captions else None
    cov = get_covariance(pipe, captions, cache_dir=args.cache_dir, progress=True)
    print(f"covariance {cov.fingerprint[:16]} over {cov.n_tokens} token encodings")


def _cmd_fit(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .concept import concept_to_bytes
    from .covariance import get_covariance, read_captions
    from .fit import FitConfig, base_fit_defaults, fit_concept
    from .pipeline import load_pipeline

    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images in {args.images}")
    images = [Image.open(p).convert("RGB") for p in files]
    masks = _masks(Path(args.masks), files, images) if args.masks else None
    pipe = load_pipeline(args.base, _device())
    captions = read_captions(Path(args.captions)) if args.captions else None
    cov = get_covariance(pipe, captions, cache_dir=args.cache_dir, progress=True)
    fields = {"steps": args.steps, "seed": args.seed, "resolution": args.resolution}
    fields.update(base_fit_defaults(pipe))  # the base model's folder, then what was asked
    asked = {
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "restarts": args.restarts,
    }
    fields.update({k: v for k, v in asked.items() if v is not None})
    config = FitConfig(**fields)
    with tqdm(total=config.steps * config.restarts, desc="fit", unit="step") as bar:

        def progress(p):
            bar.update(p.step - bar.n)  # events are throttled: several steps apart
            bar.set_postfix(loss=f"{p.loss:.4f}")

        concept = fit_concept(
            pipe,
            images,
            args.token,
            args.superclass,
            config,
            cov,
            masks=masks,
            on_progress=progress,
        )
    import torch

    storage = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    storage["int8"] = torch.int8
    data = concept_to_bytes(concept, storage.get(args.storage))  # "auto": by architecture
    Path(args.out).write_bytes(data)
    print(f"wrote {args.out} ({len(data)} bytes)")


def _masks(folder: Path, files: list[Path], images: list[Image.Image]) -> list[Image.Image]:
    """One mask per photo: `folder`/<photo stem>.<any image suffix>, greyscale loss weight
    (white = subject); a photo without one gets a uniform mask."""
    if not folder.is_dir():
        raise SystemExit(f"no mask folder {folder}")
    by_stem = {p.stem: p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = []
    for path, image in zip(files, images, strict=True):
        mask = by_stem.get(path.stem)
        masks.append(Image.open(mask).convert("L") if mask else Image.new("L", image.size, 255))
    if not any(p.stem in by_stem for p in files):
        raise SystemExit(f"no mask in {folder} is named like a photo in the images folder")
    return masks


def _cmd_generate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .apply import DEFAULT_STRENGTH, strength_to_control
    from .concept import load_concept
    from .generate import generate
    from .pipeline import load_pipeline

    pipe = load_pipeline(args.base, _device())
    concepts = [load_concept(p) for p in args.concept]
    strength = DEFAULT_STRENGTH if args.strength is None else args.strength
    controls = [strength_to_control(strength)] * len(concepts) if concepts else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=args.steps, desc="generate", unit="step") as bar:
        images = generate(
            pipe,
            args.prompt,
            concepts,
            negative_prompt=args.negative,
            seed=args.seed,
            steps=args.steps,
            guidance=args.guidance,
            n=args.n,
            controls=controls,
            on_step=lambda done, total: bar.update(1),
            global_locking=args.global_locking,
        )
    for k, image in enumerate(images):
        path = out / f"{args.seed}-{k}.png"
        image.save(path)
        print(path)


def _cmd_info(args: argparse.Namespace) -> None:
    from safetensors import safe_open

    from .concept import concept_from_bytes
    from .text import ARCH_NAMES

    data = Path(args.file).read_bytes()
    concept = concept_from_bytes(data)
    print(f"token:        {concept.token}")
    print(f"superclass:   {concept.superclass}")
    print(f"architecture: {concept.architecture} ({ARCH_NAMES[concept.architecture]})")
    print(f"base:         {concept.base_model_id} ({concept.base_fingerprint[:16]})")
    print(f"covariance:   {concept.covariance_fingerprint[:16]}")
    print(f"default gate: beta={concept.default_beta} tau={concept.default_tau}")
    total = sum(v.numel() for v in concept.o_v.values())
    print(f"layers:       {len(concept.o_v)} cross-attention layers, value dims sum {total}")
    print(f"size:         {len(data)} bytes")
    print("tensors:")
    with safe_open(args.file, "pt") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open is not a dict
            t = f.get_slice(name)
            print(f"  {name:<16} {t.get_dtype():<5} {t.get_shape()}")
    print("o_v per layer:")
    for name, vector in concept.o_v.items():
        print(f"  {name:<56} {vector.numel()}")
    print(f"training:     {json.dumps(concept.training, sort_keys=True)}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `perfusion` command."""
    from .pipeline import default_base

    parser = argparse.ArgumentParser(prog="perfusion", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_base(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--base", default=default_base(), help="diffusers folder or HF id")
        return p

    cov = with_base(sub.add_parser("covariance", help="compute and cache C for a base model"))
    cov.add_argument("--captions", help="caption file, one per line (default: bundled list)")
    cov.add_argument("--cache-dir", type=Path)
    cov.set_defaults(func=_cmd_covariance)

    fit = with_base(sub.add_parser("fit", help="fit a concept from a folder of images"))
    fit.add_argument("--images", required=True)
    fit.add_argument("--token", required=True, help="new word, e.g. <my-dog>")
    fit.add_argument("--superclass", required=True, help="e.g. dog")
    fit.add_argument("--out", required=True)
    fit.add_argument("--steps", type=int, default=400)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--batch-size", type=int, help="images per pass (default 4)")
    fit.add_argument(
        "--grad-accum", type=int,
        help="passes per step (default: the base model folder's perfusion_fit.json, else 4)",
    )  # fmt: skip
    fit.add_argument(
        "--restarts", type=int,
        help="fit this many times (seeds seed, seed+1, ...) and keep the one with the lowest "
        "denoising loss on the photos (default: the folder's, else 1; SD 1.x/2.x)",
    )  # fmt: skip
    fit.add_argument("--resolution", type=int, default=None)
    fit.add_argument("--masks", help="folder of subject masks named like the photos (optional)")
    fit.add_argument("--captions")
    fit.add_argument("--cache-dir", type=Path)
    fit.add_argument(
        "--storage",
        choices=("auto", "fp16", "bf16", "fp32", "int8"),
        default="auto",
        help="file precision; int8 stores o_v block-scaled (about half the bytes); "
        "auto: fp16 for SD 1.x/2.x, int8 for SDXL",
    )
    fit.set_defaults(func=_cmd_fit)

    gen = with_base(sub.add_parser("generate", help="generate images"))
    gen.add_argument("--concept", action="append", default=[])
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--out", required=True)
    gen.add_argument(
        "--strength",
        type=float,
        default=None,
        help="0 weakest .. 1 strongest (default: the trained concept, apply.DEFAULT_STRENGTH)",
    )
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--n", type=int, default=1)
    gen.add_argument("--steps", type=int, default=25)
    gen.add_argument("--negative", default="")
    gen.add_argument("--guidance", type=float, default=7.5)
    gen.add_argument("--global-locking", action="store_true")
    gen.set_defaults(func=_cmd_generate)

    info = sub.add_parser("info", help="describe a concept file")
    info.add_argument("file")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `perfusion` console script."""
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
