"""Read shape, object colour and background colour back from a toy-world image, analytically.

Background: median of a band of pixels just inside the border, snapped to the nearest
background colour.
Object: its colour is the median of the pixels farthest from the background, snapped to the
nearest object colour; its mask is the largest connected region of pixels closer to that colour
than to the background (the half-way contour, so blur neither grows nor shrinks it), ignoring the
2-pixel frame where decoders smear; its shape is the template (the shape's mask scaled to its
bounding box) with the best soft IoU, which works because shapes are never rotated.
Generated images are blurrier than renders, so the reader is checked on blurred renders too.
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


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of a boolean mask."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, current = 0, 0, 0
    height, width = mask.shape
    for start in zip(*np.nonzero(mask), strict=True):
        if labels[start]:
            continue
        current += 1
        labels[start] = current
        stack, size = [start], 0
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = current, size
    return labels == best


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
    frame = np.zeros(distance.shape, dtype=bool)
    frame[2:-2, 2:-2] = True
    candidate = (distance > _THRESHOLD) & frame
    if candidate.sum() < _MIN_PIXELS:
        return Attributes(None, None, background)
    # Anti-aliased edge pixels mix both colours: take the object's colour from its inner pixels.
    inner = candidate & (distance >= 0.8 * np.percentile(distance[candidate], 90))
    obj_rgb = np.median(a[inner], axis=0)
    color = _nearest(obj_rgb, COLORS)
    closer = np.linalg.norm(a - obj_rgb, axis=2) < distance
    mask = _largest_component(closer & frame)
    if mask.sum() < _MIN_PIXELS:
        return Attributes(None, color, background)
    return Attributes(_shape(mask), color, background)
