"""The toy world: one object on a plain background, 64x64 RGB, with captions.

An object has a shape, a main colour, a pattern (plain, striped, dotted or bicolor), a second
colour (the pattern's) and a size. Captions name the shape, the main colour and the background,
sometimes the pattern, and **never the second colour by a colour word**: so no prompt can ask
for one particular object, exactly as "a dog" cannot ask for your dog.

World 3 adds breeds (`BREEDS`): made-up nouns such as "a kuvo", each the name of one complete
patterned look, second colour included, the way "a dalmatian" names a dog's whole coat. They
are what teaches a model that one word's encoding can carry a whole appearance, as the nouns
of a real caption set do; without them the toy model reads the main colour only from the
colour word's own token, and no single-token method (Perfusion, Textual Inversion) has a
channel to the look. A few specific looks (`SUBJECTS`) are no breed and never occur in the
training images: they are the "subjects" users personalize, drawable but not nameable.

Everything is drawn procedurally and is deterministic given a `random.Random`.
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
# "plain" is one colour; the others paint the second colour over the main one.
PATTERNS: tuple[str, ...] = ("plain", "striped", "dotted", "bicolor")

# Generic nouns that name any object of the world: the natural superclasses for concepts.
SUPERCLASS_NOUNS: tuple[str, ...] = ("shape", "toy")

MIN_RADIUS, MAX_RADIUS = 14.0, 23.0
PATTERN_NAMED = 0.5  # how often a training caption names the pattern
# How often a training caption names the main colour. Below 1, some captions say only the
# noun ("a square on a white background"), so a bare noun draws its shape in any colour, as
# "a dog" does in Stable Diffusion: the superclass prompt a key-locked concept leans on.
COLOR_NAMED = 1.0
BREED_COUNT = 60
BREED_SHARE = 0.35  # share of training scenes that show a breed
BREED_NAMED = 0.8  # how often a breed's caption calls it by its breed word

# Templates that name the object and the background (used for evaluation and most training).
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
class Look:
    """What an object looks like, apart from where it is and how big."""

    shape: str
    color: str  # the main colour, named by captions
    pattern: str = "plain"
    second: str | None = None  # the pattern's colour, never named; None when plain

    def __post_init__(self) -> None:
        if self.shape not in SHAPES or self.color not in COLORS or self.pattern not in PATTERNS:
            raise ValueError(f"not a look of this world: {self}")
        if (self.pattern == "plain") != (self.second is None) or self.second == self.color:
            raise ValueError(f"a patterned look needs a second, different colour: {self}")
        if self.second is not None and self.second not in COLORS:
            raise ValueError(f"not a colour of this world: {self.second}")

    @property
    def colors(self) -> set[str]:
        return {self.color} | ({self.second} if self.second else set())


@dataclass(frozen=True)
class Scene:
    """One object on a plain background; geometry in pixels of the 64x64 image."""

    look: Look
    background: str
    cx: float
    cy: float
    radius: float

    @property
    def shape(self) -> str:
        return self.look.shape

    @property
    def color(self) -> str:
        return self.look.color


@dataclass(frozen=True)
class Subject:
    """A look that never occurs in the base model's training images, and its superclass."""

    look: Look
    superclass: str  # the word a user would pick: its shape, or a generic noun


# The first four are the quality harness's subjects; the rest are kept for a final check that
# nothing is tuned on. Colour pairs avoid neighbours whose blend reads as a third colour.
SUBJECTS: dict[str, Subject] = {
    "candy": Subject(Look("circle", "red", "striped", "green"), "circle"),
    "dotty": Subject(Look("square", "blue", "dotted", "yellow"), "square"),
    "tile": Subject(Look("square", "orange", "bicolor", "blue"), "square"),
    "flag": Subject(Look("triangle", "purple", "striped", "orange"), "toy"),
    "donut": Subject(Look("ring", "yellow", "dotted", "red"), "ring"),
    "kite": Subject(Look("triangle", "green", "bicolor", "purple"), "triangle"),
    "zebra": Subject(Look("star", "blue", "striped", "yellow"), "toy"),
    "gem": Subject(Look("star", "purple", "bicolor", "yellow"), "star"),
}
HARNESS_SUBJECTS: tuple[str, ...] = ("candy", "dotty", "tile", "flag")
FINAL_SUBJECTS: tuple[str, ...] = ("donut", "kite", "zebra", "gem")
_HELD_OUT: frozenset[Look] = frozenset(s.look for s in SUBJECTS.values())


def _make_breeds(count: int) -> dict[str, Look]:
    """`count` patterned looks, none held out, each named by a made-up consonant-vowel word.

    Deterministic. Shapes and patterns cycle so that every shape and every pattern has its
    share of breeds; both colours are drawn at random (different from each other).
    """
    rng = random.Random("toy-world-3 breeds")
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    taken = {"a", "an", "on", "of", "in", "the"}
    breeds: dict[str, Look] = {}
    looks: set[Look] = set()
    k = 0
    while len(breeds) < count:
        shape = SHAPES[k % len(SHAPES)]
        pattern = PATTERNS[1 + (k // len(SHAPES)) % (len(PATTERNS) - 1)]
        color, second = rng.sample(COLORS, 2)
        look = Look(shape, color, pattern, second)
        k += 1
        if look in _HELD_OUT or look in looks:
            continue
        word = "".join(rng.choice(c) for c in (consonants, vowels, consonants, vowels))
        if word in taken:
            continue
        taken.add(word)
        looks.add(look)
        breeds[word] = look
    return breeds


BREEDS: dict[str, Look] = _make_breeds(BREED_COUNT)
_BREED_OF: dict[Look, str] = {look: word for word, look in BREEDS.items()}


def article(word: str) -> str:
    """The indefinite article for a phrase starting with `word`."""
    return "an" if word[0] in "aeiou" else "a"


def sample_look(rng: random.Random, background: str) -> Look:
    """A random look whose colours differ from the background and that is no held-out subject."""
    while True:
        color = rng.choice([c for c in COLORS if c != background])
        pattern = rng.choice(PATTERNS)
        second = None
        if pattern != "plain":
            second = rng.choice([c for c in COLORS if c not in (background, color)])
        look = Look(rng.choice(SHAPES), color, pattern, second)
        if look not in _HELD_OUT:
            return look


def sample_scene(rng: random.Random) -> Scene:
    """Draw a random scene of the base model's world (never a held-out subject)."""
    background = rng.choice(BACKGROUNDS)
    return Scene(sample_look(rng, background), background, *sample_placement(rng))


def sample_breed_scene(rng: random.Random, breed: str | None = None) -> Scene:
    """A scene of one breed (random unless given) on a background neither of its colours."""
    look = BREEDS[breed] if breed is not None else BREEDS[rng.choice(sorted(BREEDS))]
    background = rng.choice([b for b in BACKGROUNDS if b not in look.colors])
    return Scene(look, background, *sample_placement(rng))


def sample_training_scene(rng: random.Random, breed_share: float = BREED_SHARE) -> Scene:
    """A scene as the base model's training data holds them: a breed `breed_share` of the
    time, otherwise any look (never a held-out subject)."""
    if rng.random() < breed_share:
        return sample_breed_scene(rng)
    return sample_scene(rng)


def breed_of(look: Look) -> str | None:
    """The breed word naming `look`, if it is a breed's."""
    return _BREED_OF.get(look)


def sample_placement(rng: random.Random) -> tuple[float, float, float]:
    """A random centre and radius (cx, cy, radius) that keep the object inside the image."""
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


def _fill(look: Look, cx: float, cy: float, r: float) -> Image.Image:
    """A full-canvas (supersampled) image painted with the look's colours around the object.

    Patterns are coarse enough for 16x16 latents (a stripe or dot spans one to two latent
    cells) and mirror-symmetric about the object's vertical axis, so a mirrored scene is still
    a scene of this world."""
    s = _SUPERSAMPLE
    big = SIZE * s
    fill = Image.new("RGB", (big, big), PALETTE[look.color])
    if look.second is None:
        return fill
    draw = ImageDraw.Draw(fill)
    second = PALETTE[look.second]
    cx, cy, r = cx * s, cy * s, r * s
    if look.pattern == "striped":  # vertical stripes of the second colour, 30 % of the period
        period = 0.8 * r
        half = 0.15 * period
        for k in range(-4, 4):
            x = cx + (k + 0.5) * period
            draw.rectangle([x - half, 0, x + half, big], fill=second)
    elif look.pattern == "dotted":  # dots on a hexagonal grid with one at the centre
        step, dot = 0.9 * r, 0.25 * r
        for j in range(-3, 4):
            for i in range(-3, 4):
                x = cx + (i + 0.5 * (j % 2)) * step
                y = cy + j * step * 0.87
                draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=second)
    elif look.pattern == "bicolor":  # the lower half in the second colour
        draw.rectangle([0, cy, big, big], fill=second)
    else:
        raise ValueError(f"unknown pattern: {look.pattern}")
    return fill


def render(scene: Scene) -> Image.Image:
    """The 64x64 RGB image of a scene."""
    s = _SUPERSAMPLE
    big = SIZE * s
    canvas = Image.new("RGB", (big, big), PALETTE[scene.background])
    fill = _fill(scene.look, scene.cx, scene.cy, scene.radius)
    canvas.paste(fill, (0, 0), shape_mask(scene.shape, scene.cx * s, scene.cy * s,
                                          scene.radius * s, big))  # fmt: skip
    return canvas.resize((SIZE, SIZE), Image.Resampling.BOX)


def object_mask(scene: Scene) -> Image.Image:
    """The object's soft ("L") mask at 64x64: the exact foreground of `render(scene)`."""
    s = _SUPERSAMPLE
    big = shape_mask(scene.shape, scene.cx * s, scene.cy * s, scene.radius * s, SIZE * s)
    return big.resize((SIZE, SIZE), Image.Resampling.BOX)


def object_phrase(
    look: Look, name_pattern: bool, noun: str | None = None, name_color: bool = True
) -> str:
    """How a caption names an object: "[pattern] [colour] noun"; the second colour never."""
    words = [look.pattern] if name_pattern else []
    colour = [look.color] if name_color else []
    return " ".join([*words, *colour, noun or look.shape])


def caption(
    scene: Scene,
    rng: random.Random,
    complete: bool = False,
    pattern_named: float = PATTERN_NAMED,
    breed_named: float = BREED_NAMED,
    color_named: float = COLOR_NAMED,
) -> str:
    """A caption of the scene. With complete=True it names shape, main colour, pattern and
    background in words; otherwise a breed's look is called by its breed word with probability
    `breed_named`, and other captions name the pattern with probability `pattern_named`,
    sometimes say "shape"/"toy" instead of the shape, name the main colour with probability
    `color_named` (no random draw when it is 1), and sometimes omit the background."""
    breed = None if complete else breed_of(scene.look)
    if breed is not None and rng.random() < breed_named:
        obj = breed
    else:
        name_pattern = complete or rng.random() < pattern_named
        roll = rng.random()
        noun = None if complete or roll < 0.85 else rng.choice(SUPERCLASS_NOUNS)
        name_color = complete or color_named >= 1 or rng.random() < color_named
        obj = object_phrase(scene.look, name_pattern, noun, name_color)
    if complete or rng.random() < 0.85:
        template = rng.choice(COMPLETE_TEMPLATES)
    else:
        template = rng.choice(PARTIAL_TEMPLATES)
    return template.format(a=article(obj), obj=obj, bg=scene.background)


def captions(n: int, seed: int) -> list[str]:
    """n captions of freshly sampled scenes (e.g. for the Perfusion covariance of encodings)."""
    rng = random.Random(seed)
    return [caption(sample_training_scene(rng), rng) for _ in range(n)]


def vocabulary() -> list[str]:
    """Every word any caption can contain, sorted."""
    words = set(SHAPES) | set(COLORS) | set(BACKGROUNDS) | set(PATTERNS) | set(SUPERCLASS_NOUNS)
    words |= {"a", "an"} | set(BREEDS)
    for template in COMPLETE_TEMPLATES + PARTIAL_TEMPLATES:
        words |= {w for w in template.split() if not w.startswith("{")}
    return sorted(words)


def subject_backgrounds(name: str) -> list[str]:
    """The backgrounds a subject can be photographed on (none shares one of its colours)."""
    return [b for b in BACKGROUNDS if b not in SUBJECTS[name].look.colors]


def subject_scene(name: str, background: str, rng: random.Random) -> Scene:
    """One "photo" of a held-out subject on a plain background, at a random place and size."""
    look = SUBJECTS[name].look
    if background in look.colors:
        raise ValueError(f"{name} is invisible on a {background} background")
    return Scene(look, background, *sample_placement(rng))


def render_subject(name: str, background: str, rng: random.Random) -> Image.Image:
    """The image of `subject_scene(name, background, rng)`."""
    return render(subject_scene(name, background, rng))
