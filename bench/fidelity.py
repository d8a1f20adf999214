"""Concept fidelity on toy-world images: a colour-pattern correlogram of the object region.

Definition (all on the 64x64 image):
1. Background = median of the 2-pixel border; object = pixels farther than THRESHOLD (RGB
   distance) from it. Fewer than MIN_PIXELS object pixels: no object (similarity 0).
2. Every object pixel gets the label of its nearest toy-world palette colour (9 colours).
3. For each offset d in OFFSETS (right, down and both diagonals, 2 px) the joint histogram of
   (label(p), label(p + d)) over pairs of object pixels, normalised to sum 1/len(OFFSETS).
   This captures the object's colours AND its pattern: how often red sits next to white, in
   which direction (stripe orientation), at what frequency (checker vs dots vs halves).
4. A concept's reference is the mean histogram of its training photos; the fidelity of an image
   is the histogram intersection sum(min(h_image, h_ref)) in [0, 1]: 1 = same colour-pattern
   statistics as the photos, 0 = no colour pair in common.

`separation()` validates it: fresh photos of a concept score high against their own reference
and near 0 against every other concept's; a flat single-colour object scores low.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from workers.toyworld.world import PALETTE

THRESHOLD = 60.0
MIN_PIXELS = 12
OFFSETS: tuple[tuple[int, int], ...] = ((0, 2), (2, 0), (2, 2), (2, -2))
_NAMES = tuple(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], dtype=np.float32)
_K = len(_NAMES)


def _array(image: Image.Image) -> np.ndarray:
    image = image.convert("RGB")
    if image.size != (64, 64):
        image = image.resize((64, 64), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def object_mask(image: Image.Image) -> np.ndarray:
    """Boolean mask of pixels that differ clearly from the (border) background colour."""
    a = _array(image)
    border = np.concatenate(
        [
            a[:2].reshape(-1, 3),
            a[-2:].reshape(-1, 3),
            a[:, :2].reshape(-1, 3),
            a[:, -2:].reshape(-1, 3),
        ]
    )
    background = np.median(border, axis=0)
    return np.linalg.norm(a - background, axis=2) > THRESHOLD


def descriptor(image: Image.Image) -> np.ndarray:
    """Flattened per-offset colour co-occurrence histogram of the object; zeros if no object."""
    a = _array(image)
    mask = object_mask(image)
    out = np.zeros((len(OFFSETS), _K, _K), dtype=np.float64)
    if mask.sum() < MIN_PIXELS:
        return out.reshape(-1)
    labels = np.argmin(np.linalg.norm(a[:, :, None, :] - _RGB[None, None], axis=3), axis=2)
    h, w = mask.shape
    for k, (dy, dx) in enumerate(OFFSETS):
        y0, y1 = max(0, -dy), h - max(0, dy)
        x0, x1 = max(0, -dx), w - max(0, dx)
        both = mask[y0:y1, x0:x1] & mask[y0 + dy : y1 + dy, x0 + dx : x1 + dx]
        first = labels[y0:y1, x0:x1][both]
        second = labels[y0 + dy : y1 + dy, x0 + dx : x1 + dx][both]
        if first.size:
            counts = np.bincount(first * _K + second, minlength=_K * _K).reshape(_K, _K)
            counts = counts + counts.T  # direction of the pair along d does not matter
            out[k] = counts / counts.sum() / len(OFFSETS)
    return out.reshape(-1)


def reference(images: list[Image.Image]) -> np.ndarray:
    """The concept's reference descriptor: mean over its photos."""
    return np.mean([descriptor(im) for im in images], axis=0)


def similarity(image: Image.Image, ref: np.ndarray) -> float:
    """Histogram intersection of the image's descriptor with a reference, in [0, 1]."""
    return float(np.minimum(descriptor(image), ref).sum())


def mean_similarity(images: list[Image.Image], ref: np.ndarray) -> float:
    return float(np.mean([similarity(im, ref) for im in images])) if images else float("nan")
