"""The toy world: one flat-coloured shape on a plain background, 64x64 RGB, with captions.

Everything is drawn procedurally and is deterministic given a `random.Random`.
Held-out concepts (patterned or two-tone objects) use the same geometry but never appear in
the base model's training data or vocabulary; they are the "subjects" users personalize.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SIZE = 64
_SUPERSAMPLE = 4  # draw at 4x and box-downsample, for anti-aliased edges

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 50, 180),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple")
BACKGROUNDS: tuple[str, ...] = ("white", "black", "gray", "blue", "green")

# Generic nouns that name any object of the world: the natural superclasses for concepts.
SUPERCLASS_NOUNS: tuple[str, ...] = ("shape", "toy")

MIN_RADIUS, MAX_RADIUS = 11.0, 22.0

# Templates that name shape, colour and background (used for evaluation and most training).
COMPLETE_TEMPLATES: tuple[str, ...] = (
    "{a} {obj} on a {bg} background",
    "a photo of {a} {obj} on a {bg} background",
    "a picture of {a} {obj} on a {bg} background",
    "an image of {a} {obj} on a {bg} background",
    "a good photo of the {obj} on a {bg} background",
    "{a} {obj} in front of a {bg} background",
    "a {bg} background with {a} {obj}",
)
# Templates that leave the background unsaid.
PARTIAL_TEMPLATES: tuple[str, ...] = (
    "{a} {obj}",
    "a photo of {a} {obj}",
    "a good photo of the {obj}",
)


@dataclass(frozen=True)
class Scene:
    """One object on a plain background; geometry in pixels of the 64x64 image."""

    shape: str
    color: str
    background: str
    cx: float
    cy: float
    radius: float


@dataclass(frozen=True)
class HeldoutConcept:
    """A subject that is not in the base vocabulary: a shape with a pattern of two colours."""

    shape: str
    pattern: str  # "stripes", "checker", "dots" or "split"
    colors: tuple[str, str]
    superclass: str  # the closest base-vocabulary noun


HELDOUT_CONCEPTS: dict[str, HeldoutConcept] = {
    "candy": HeldoutConcept("circle", "stripes", ("red", "white"), "circle"),
    "checker": HeldoutConcept("square", "checker", ("black", "yellow"), "square"),
    "dotty": HeldoutConcept("star", "dots", ("blue", "yellow"), "star"),
    "split": HeldoutConcept("triangle", "split", ("orange", "purple"), "triangle"),
}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def sample_scene(rng: random.Random) -> Scene:
    """Draw a random scene; the object's colour always differs from the background's."""
    background = rng.choice(BACKGROUNDS)
    color = rng.choice([c for c in COLORS if c != background])
    return Scene(rng.choice(SHAPES), color, background, *_sample_placement(rng))


def _sample_placement(rng: random.Random) -> tuple[float, float, float]:
    radius = rng.uniform(MIN_RADIUS, MAX_RADIUS)
    margin = radius + 2.0
    return rng.uniform(margin, SIZE - margin), rng.uniform(margin, SIZE - margin), radius


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Outline of a polygonal shape (square, triangle, star), in the given coordinates."""
    if shape == "square":
        h = 0.85 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)]
    if shape == "star":
        points = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + rad * math.cos(angle), cy + rad * math.sin(angle)))
        return points
    raise ValueError(f"not a polygon: {shape}")


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> Image.Image:
    """A binary ("L", 0/255) mask of the shape drawn on a size x size canvas."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if shape in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if shape == "ring":
            ri = 0.55 * r
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    elif shape in SHAPES:
        draw.polygon(shape_polygon(shape, cx, cy, r), fill=255)
    else:
        raise ValueError(f"unknown shape: {shape}")
    return mask


def _compose(
    shape: str,
    background: str,
    cx: float,
    cy: float,
    radius: float,
    fill: Image.Image,
) -> Image.Image:
    """Paste a full-canvas `fill` image (at supersampled size) through the shape's mask."""
    s = _SUPERSAMPLE
    big = SIZE * s
    canvas = Image.new("RGB", (big, big), PALETTE[background])
    canvas.paste(fill, (0, 0), shape_mask(shape, cx * s, cy * s, radius * s, big))
    return canvas.resize((SIZE, SIZE), Image.Resampling.BOX)


def render(scene: Scene) -> Image.Image:
    """The 64x64 RGB image of a scene."""
    big = SIZE * _SUPERSAMPLE
    fill = Image.new("RGB", (big, big), PALETTE[scene.color])
    return _compose(scene.shape, scene.background, scene.cx, scene.cy, scene.radius, fill)


def _object_phrase(scene: Scene, rng: random.Random, complete: bool) -> str:
    roll = rng.random()
    if complete or roll < 0.8:
        return f"{scene.color} {scene.shape}"
    if roll < 0.9:
        return f"{scene.color} {rng.choice(SUPERCLASS_NOUNS)}"
    return scene.shape


def caption(scene: Scene, rng: random.Random, complete: bool = False) -> str:
    """A caption of the scene. With complete=True it always names shape, colour and background;
    otherwise it sometimes says "shape"/"toy" instead of the shape or omits the background."""
    obj = _object_phrase(scene, rng, complete)
    if complete or rng.random() < 0.85:
        template = rng.choice(COMPLETE_TEMPLATES)
    else:
        template = rng.choice(PARTIAL_TEMPLATES)
    return template.format(a=_article(obj), obj=obj, bg=scene.background)


def captions(n: int, seed: int) -> list[str]:
    """n captions of freshly sampled scenes (e.g. for the Perfusion covariance of encodings)."""
    rng = random.Random(seed)
    return [caption(sample_scene(rng), rng) for _ in range(n)]


def vocabulary() -> list[str]:
    """Every word any caption can contain, sorted."""
    words = set(SHAPES) | set(COLORS) | set(BACKGROUNDS) | set(SUPERCLASS_NOUNS) | {"a", "an"}
    for template in COMPLETE_TEMPLATES + PARTIAL_TEMPLATES:
        words |= {w for w in template.split() if not w.startswith("{")}
    return sorted(words)


def _pattern_fill(concept: HeldoutConcept, cx: float, cy: float, r: float) -> Image.Image:
    """A full-canvas (supersampled) image painted with the concept's pattern around the object."""
    s = _SUPERSAMPLE
    big = SIZE * s
    first, second = (PALETTE[c] for c in concept.colors)
    fill = Image.new("RGB", (big, big), first)
    draw = ImageDraw.Draw(fill)
    cx, cy, r = cx * s, cy * s, r * s
    if concept.pattern == "stripes":  # diagonal stripes, about 4 per object
        period = r / 2.0
        for k in range(-40, 40):
            x0 = cx + k * period
            draw.polygon(
                [(x0, cy - 2 * r), (x0 + period / 2, cy - 2 * r),
                 (x0 + period / 2 + 4 * r, cy + 2 * r), (x0 + 4 * r, cy + 2 * r)],
                fill=second,
            )  # fmt: skip
    elif concept.pattern == "checker":  # 4x4 checkerboard over the object's box
        cell = 2 * 0.85 * r / 4
        x0, y0 = cx - 0.85 * r, cy - 0.85 * r
        for i in range(4):
            for j in range(4):
                if (i + j) % 2:
                    box = [x0 + i * cell, y0 + j * cell, x0 + (i + 1) * cell, y0 + (j + 1) * cell]
                    draw.rectangle(box, fill=second)
    elif concept.pattern == "dots":  # polka dots on a hexagonal grid
        step, dot = r / 2.2, r / 7.0
        for j in range(-6, 7):
            for i in range(-6, 7):
                x = cx + (i + 0.5 * (j % 2)) * step
                y = cy + j * step * 0.87
                draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=second)
    elif concept.pattern == "split":  # two-tone: right half in the second colour
        draw.rectangle([cx, 0, big, big], fill=second)
    else:
        raise ValueError(f"unknown pattern: {concept.pattern}")
    return fill


def render_concept(name: str, background: str, rng: random.Random) -> Image.Image:
    """One "photo" of a held-out concept on a plain background, at a random place and size."""
    concept = HELDOUT_CONCEPTS[name]
    cx, cy, radius = _sample_placement(rng)
    fill = _pattern_fill(concept, cx, cy, radius)
    return _compose(concept.shape, background, cx, cy, radius, fill)
