"""Write the caption list used to estimate C: `python -m workers.perfusion.make_captions`.

Deterministic (fixed seed): compositional captions from subjects × attributes × scenes × styles,
with varied sentence shapes and lengths so C sees short and long prompts.
"""

from __future__ import annotations

import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "captions.txt"
COUNT = 12_000
SEED = 0

_SUBJECTS = """dog cat puppy kitten horse cow sheep goat pig rabbit fox wolf bear lion tiger
elephant
giraffe zebra monkey owl eagle parrot duck swan penguin fish turtle frog snake butterfly
man woman child boy girl baby couple family chef doctor farmer soldier
astronaut knight wizard robot dancer musician painter student teacher
car bicycle motorcycle bus train airplane boat ship truck tractor rocket
house castle church bridge tower lighthouse cabin tent skyscraper barn windmill
tree flower rose sunflower cactus mushroom mountain river lake waterfall volcano island
cup mug teapot vase bottle chair sofa table lamp clock book guitar piano violin camera
backpack hat shoe sneaker umbrella sword shield crown doll ball kite
apple banana orange cake pizza burger sandwich donut cookie"""
_ATTRIBUTES = """red blue green yellow purple orange black white golden silver pink brown gray
small large tiny giant old new ancient modern shiny rusty fluffy furry wooden metal glass
plastic ceramic knitted striped spotted happy sad sleepy angry curious cute scary elegant
broken colorful dirty clean wet glowing"""
_SCENES = """on the beach|in a forest|on a mountain top|in the city at night|in a living room
|in a kitchen|on a wooden table|in a garden|in the snow|in the rain|in the desert|under water
|in space|on the moon|in a field of flowers|on a busy street|in a library|in a cafe
|at a train station|on a boat|in a park|next to a river|in front of a castle|on a rooftop
|in a classroom|in a museum|at sunset|at sunrise|in the fog|on a frozen lake|in a cave
|in a jungle|on a farm|in a bedroom|on a sofa|in a shop window|on a stage|in a tunnel"""
_STYLES = """a photo|a close-up photo|a blurry photo|a black and white photo|a painting
|an oil painting|a watercolor painting|a pencil sketch|a drawing|a cartoon|an illustration
|a 3d render
|a pixel art image|a low poly model|a vintage photograph|a studio photo|a polaroid photo
|a poster|an anime drawing|a children's book illustration|a mosaic|a sculpture|a photograph
|a cinematic still|a macro photo"""
_EXTRAS = """wearing a hat|with sunglasses|holding a flower|next to a dog|with a cat|jumping
|sleeping|running|sitting|looking at the camera|in the style of van gogh|at golden hour
|with dramatic lighting|with soft light|high resolution|detailed|from above|from the side
|surrounded by balloons|covered in snow|made of lego|floating in the air"""


def _items(table: str) -> list[str]:
    """Entries of a "|"-separated table; line breaks are ignored."""
    return [item.strip() for item in table.replace("\n", "").split("|")]


SUBJECTS = _SUBJECTS.split() + ["teddy bear", "old man", "old woman", "toy car", "ice cream"]
SUBJECTS += ["bowl of soup"]
ATTRIBUTES = _ATTRIBUTES.split()
SCENES = _items(_SCENES)
STYLES = _items(_STYLES)
EXTRAS = _items(_EXTRAS)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_captions(count: int = COUNT, seed: int = SEED) -> list[str]:
    """`count` distinct captions, the same for the same seed."""
    rng = random.Random(seed)
    subjects = SUBJECTS
    captions: set[str] = set()
    ordered: list[str] = []
    while len(ordered) < count:
        subject = rng.choice(subjects)
        attribute = rng.choice(ATTRIBUTES)
        shape = rng.randrange(6)
        if shape == 0:
            text = f"{_article(attribute)} {attribute} {subject}"
        elif shape == 1:
            text = f"{_article(attribute)} {attribute} {subject} {rng.choice(SCENES)}"
        elif shape == 2:
            text = f"{rng.choice(STYLES)} of {_article(attribute)} {attribute} {subject}"
        elif shape == 3:
            text = (
                f"{rng.choice(STYLES)} of {_article(subject)} {subject} {rng.choice(SCENES)}, "
                f"{rng.choice(EXTRAS)}"
            )
        elif shape == 4:
            other = rng.choice(subjects)
            text = (
                f"{_article(attribute)} {attribute} {subject} and {_article(other)} {other} "
                f"{rng.choice(SCENES)}"
            )
        else:
            text = f"the {subject} {rng.choice(EXTRAS)} {rng.choice(SCENES)}"
        if text not in captions:
            captions.add(text)
            ordered.append(text)
    return ordered


def main() -> None:
    """Write data/captions.txt."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(make_captions()) + "\n")
    print(f"wrote {COUNT} captions to {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
