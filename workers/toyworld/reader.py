"""Read a toy-world image back into attributes, without any learned model.

Background: the median colour of a band just inside the image edge, snapped to the nearest
background colour.
Object: the largest connected region of pixels far from the background (both of an object's
colours always differ from its background), closed over one-pixel seams and ignoring the 2-pixel
frame where decoders smear; its
shape is the template (the shape's mask scaled to its bounding box) with the best soft IoU,
which works because shapes are never rotated.
Colours and pattern: the object's inner pixels (one pixel in from its edge, where it blends into
the background) are snapped to the nearest object colour when close to one; the most frequent
is the main colour. The pattern is read from where the object is *not* its main colour: pixels
two in from the edge that are far from the main colour as drawn (the median of its snapped
pixels) and not a blend of it with the background. Under 8 % of them: plain. Otherwise their
layout decides: far below the main-coloured pixels (centroids apart by a fifth of the object's
height) is bicolor, whose upper colour is the main one; the same along a vertical shift of a
third of the object's radius is striped; otherwise dotted. The second colour is the object
colour those pixels snap to most, else the one nearest their median. Generated stripes and
dots are often thin and off-palette (a blend of the two colours): reading the layout from
snapped pixels alone called such images plain (checked against images labelled by eye,
`tests/unit/toyworld/data/labelled.json`).
Generated images are blurrier than renders, so the reader is checked on blurred renders too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from itertools import combinations, product

import numpy as np
from PIL import Image

from workers.toyworld.world import BACKGROUNDS, COLORS, PALETTE, SHAPES, SIZE, Look, shape_mask

_GRID = 24  # templates and objects are compared at this resolution
_MIN_PIXELS = 12  # fewer object pixels than this: no object
_PLAIN_BELOW = 0.08  # share of the object's deep-inner pixels not in its main colour
_BICOLOR_SEPARATION = 0.2  # centroid gap between the two colours, in object heights
_STRIPE_OVERLAP = 0.6  # share of not-main pixels still not main a shift below


@dataclass(frozen=True)
class Attributes:
    shape: str | None
    color: str | None
    background: str
    pattern: str | None = None
    second: str | None = None

    def matches(self, look: Look) -> bool:
        """Whether every attribute of `look` was read back."""
        return (self.shape, self.color, self.pattern, self.second) == (
            look.shape,
            look.color,
            look.pattern,
            look.second,
        )


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
# A pixel counts as an object colour when nearer to it than 45 % of the closest two colours.
_SNAP = 0.45 * min(
    float(np.linalg.norm(np.subtract(PALETTE[a], PALETTE[b]))) for a, b in combinations(COLORS, 2)
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
    """The largest 4-connected region of a boolean mask (all False if it has none)."""
    if not mask.any():
        return mask
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


def _dilated(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask or next to it (4-neighbourhood)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _eroded(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask whose four neighbours are in it too."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def _pattern(
    a: np.ndarray, core: np.ndarray, mask: np.ndarray, background: np.ndarray
) -> tuple[str | None, str | None, str | None]:
    """Main colour, pattern and second colour of the object's core pixels."""
    pixels = a[core]
    if len(pixels) == 0:
        return None, None, None
    palette = _rgb(COLORS)
    distances = np.linalg.norm(pixels[:, None, :] - palette[None], axis=2)
    nearest = distances.argmin(axis=1)
    snapped = distances.min(axis=1) < _SNAP
    counts = np.bincount(nearest[snapped], minlength=len(COLORS))
    if counts.sum() == 0:
        return _nearest(np.median(pixels, axis=0), COLORS), None, None
    first = int(counts.argmax())
    tone = np.median(pixels[snapped & (nearest == first)], axis=0)  # the main colour as drawn
    main = np.linalg.norm(pixels - tone, axis=1) < _SNAP
    edge = tone - background  # pixels on this segment are the soft rim, not a pattern
    along = np.clip((pixels - background) @ edge / max(float(edge @ edge), 1e-6), 0.0, 1.0)
    rim = np.linalg.norm(pixels - (background + along[:, None] * edge), axis=1) < _SNAP
    deep = _eroded(core)[core]
    other = ~main & ~rim & deep
    if other.sum() < _PLAIN_BELOW * deep.sum():
        return COLORS[first], "plain", None
    named = other & snapped & (nearest != first)
    if named.sum() >= 3:
        second = int(np.bincount(nearest[named], minlength=len(COLORS)).argmax())
    else:
        rest = [k for k in range(len(COLORS)) if k != first]
        gap = np.linalg.norm(palette[rest] - np.median(pixels[other], axis=0), axis=1)
        second = rest[int(gap.argmin())]
    ys, xs = np.nonzero(core)
    keep = main | other
    ys, xs, is_other = ys[keep], xs[keep], other[keep]
    rows = np.nonzero(mask.any(axis=1))[0]
    height = rows.max() - rows.min() + 1
    y_main, y_other = ys[~is_other].mean(), ys[is_other].mean()
    if abs(y_main - y_other) > _BICOLOR_SEPARATION * height:
        upper, lower = (first, second) if y_main < y_other else (second, first)
        return COLORS[upper], "bicolor", COLORS[lower]
    label = np.full(a.shape[:2], -1)
    label[ys, xs] = is_other
    shift = max(2, round(height / 6))  # a third of the radius
    here, below = label[:-shift], label[shift:]
    both = (here == 1) & (below >= 0)
    overlap = float((below[both] == 1).mean()) if both.any() else 0.0
    pattern = "striped" if overlap > _STRIPE_OVERLAP else "dotted"
    return COLORS[first], pattern, COLORS[second]


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
    # Closing fills the one-pixel seams where a pattern's two colours blend into something
    # near the background (blue + yellow is almost gray); a ring's hole is far wider.
    far = distance > _THRESHOLD
    mask = _largest_component(_eroded(_dilated(far)) & frame)
    if mask.sum() < _MIN_PIXELS:
        return Attributes(None, None, background)
    color, pattern, second = _pattern(a, _eroded(mask), mask, bg_rgb)
    return Attributes(_shape(mask), color, background, pattern, second)
