"""Read shape, object colour and background colour back from a toy-world image, analytically.

Background: median of a band of pixels just inside the border, snapped to the nearest
background colour.
Object: pixels far from that background colour; its colour is the median of its inner pixels
snapped to the nearest object colour; its shape is the template (the shape's mask scaled to its
bounding box) with the best soft IoU, which works because shapes are never rotated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from itertools import product

import numpy as np
from PIL import Image

from workers.toyworld.world import BACKGROUNDS, COLORS, PALETTE, SHAPES, SIZE, shape_mask

_GRID = 24  # templates and objects are compared at this resolution
_MIN_PIXELS = 12  # fewer object pixels than this: no object


@dataclass(frozen=True)
class Attributes:
    shape: str | None
    color: str | None
    background: str


def _rgb(names: tuple[str, ...]) -> np.ndarray:
    return np.array([PALETTE[n] for n in names], dtype=np.float32)


def _nearest(rgb: np.ndarray, names: tuple[str, ...]) -> str:
    return names[int(np.argmin(np.linalg.norm(_rgb(names) - rgb, axis=1)))]


# Half the smallest distance between any object colour and any other background colour.
_THRESHOLD = 0.5 * min(
    float(np.linalg.norm(np.subtract(PALETTE[c], PALETTE[b])))
    for c, b in product(COLORS, BACKGROUNDS)
    if c != b
)


def _normalized(mask: np.ndarray) -> np.ndarray:
    """Crop a binary mask to its bounding box and resize it to _GRID x _GRID, in [0, 1]."""
    rows, cols = np.nonzero(mask)
    crop = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    image = Image.fromarray((crop * 255).astype(np.uint8))
    return np.asarray(image.resize((_GRID, _GRID), Image.Resampling.BILINEAR)) / 255.0


@cache
def _templates() -> dict[str, np.ndarray]:
    big = 256
    return {
        s: _normalized(np.asarray(shape_mask(s, big / 2, big / 2, big * 0.4, big)) > 127)
        for s in SHAPES
    }


def _shape(mask: np.ndarray) -> str:
    obj = _normalized(mask)
    scores = {
        s: float(np.minimum(obj, t).sum() / np.maximum(obj, t).sum())
        for s, t in _templates().items()
    }
    return max(scores, key=scores.__getitem__)


def read_attributes(img: Image.Image) -> Attributes:
    """Attributes of the (single) object in a 64x64 toy-world image; None where unreadable."""
    a = np.asarray(img.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32)
    # A band just inside the edge: decoders often smear the outermost pixel row.
    near, far = slice(1, 3), slice(-3, -1)
    border = np.concatenate([a[near].reshape(-1, 3), a[far].reshape(-1, 3),
                             a[:, near].reshape(-1, 3), a[:, far].reshape(-1, 3)])  # fmt: skip
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb, BACKGROUNDS)
    distance = np.linalg.norm(a - bg_rgb, axis=2)
    mask = distance > _THRESHOLD
    if mask.sum() < _MIN_PIXELS:
        return Attributes(None, None, background)
    # Anti-aliased edge pixels mix both colours: take the object's colour from its inner pixels.
    inner = distance >= 0.8 * np.percentile(distance[mask], 90)
    color = _nearest(np.median(a[inner], axis=0), COLORS)
    return Attributes(_shape(mask), color, background)
