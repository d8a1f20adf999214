"""Write the sample photo sets offered on the new-concept page ("try with sample photos").

    python -m workers.toyworld.examples [--out examples]

Each set is four photos of one held-out subject on backgrounds that show it, exactly what a
person would upload; the subject's name, superclass and look go in a small JSON file beside
them, so the page can prefill the form.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from workers.toyworld.world import (
    SUBJECTS,
    Look,
    article,
    render_subject,
    subject_backgrounds,
)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
SAMPLE_SUBJECTS: tuple[str, ...] = ("candy", "tile")
PHOTOS = 4


def describe(look: Look) -> str:
    """The look in plain words, e.g. "a red circle with green stripes"."""
    thing = f"{article(look.color)} {look.color} {look.shape}"
    if look.pattern == "striped":
        return f"{thing} with {look.second} stripes"
    if look.pattern == "dotted":
        return f"{thing} with {look.second} dots"
    if look.pattern == "bicolor":
        return f"{thing} whose lower half is {look.second}"
    return thing


def write_examples(out: Path = EXAMPLES_DIR, names: tuple[str, ...] = SAMPLE_SUBJECTS) -> None:
    """Render each sample set into out/<name>/ with a set.json describing it."""
    for name in names:
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        subject = SUBJECTS[name]
        backgrounds = subject_backgrounds(name)
        files = []
        for k in range(PHOTOS):
            image = render_subject(name, backgrounds[k % 2], random.Random(f"example-{name}-{k}"))
            path = folder / f"photo-{k + 1}.png"
            image.save(path, optimize=True)
            files.append(path.name)
        facts = {
            "name": name.capitalize(),
            "token": f"<{name}>",
            "superclass": subject.superclass,
            "description": describe(subject.look),
            "photos": files,
        }
        (folder / "set.json").write_text(json.dumps(facts, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=EXAMPLES_DIR)
    write_examples(parser.parse_args(argv).out)


if __name__ == "__main__":
    main()
