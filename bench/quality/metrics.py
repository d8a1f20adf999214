"""How the harness scores saved images: the reader's hit rate, the correlogram, drift."""

from __future__ import annotations

import numpy as np
from PIL import Image

from bench import fidelity
from workers.toyworld.reader import read_attributes
from workers.toyworld.world import Look

ByBackground = dict[str, list[str]]  # background -> image paths


def images(paths: list[str]) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in paths]


def _all(by_bg: ByBackground) -> list[Image.Image]:
    return [im for paths in by_bg.values() for im in images(paths)]


def hit_rate(by_bg: ByBackground, look: Look) -> float:
    """Fraction of images in which the reader finds the subject: its shape, main colour,
    pattern and second colour, all four."""
    return float(np.mean([read_attributes(im).matches(look) for im in _all(by_bg)]))


def correlogram(by_bg: ByBackground, ref: np.ndarray) -> float:
    """Mean colour-pattern correlogram intersection with the subject's photos (bench.fidelity)."""
    return fidelity.mean_similarity(_all(by_bg), ref)


def prompt_fidelity(by_bg: ByBackground) -> float:
    """Fraction of images whose background is the asked-for (unseen) one."""
    hits = [
        read_attributes(im).background == bg for bg, paths in by_bg.items() for im in images(paths)
    ]
    return float(np.mean(hits))


def drift(a: list[str], b: list[str]) -> float:
    """Mean absolute pixel difference (0-255) between two same-seed image lists."""
    return float(
        np.mean(
            [
                np.abs(np.asarray(x, dtype=np.float32) - np.asarray(y, dtype=np.float32)).mean()
                for x, y in zip(images(a), images(b), strict=True)
            ]
        )
    )


def mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")
