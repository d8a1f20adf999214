"""Sample photo sets offered on the new-concept page ("try with sample photos").

Each set is a folder of examples/ (written by `python -m workers.toyworld.examples`): four
photos of one of the toy world's held-out subjects and a set.json naming it. They are toy-world
pictures, so they are offered only when the toy world is the base model. Read as plain JSON:
the web side imports nothing of workers/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from app.config import REPO_ROOT

EXAMPLES_DIR = REPO_ROOT / "examples"
URL_PREFIX = "/examples"


@dataclass(frozen=True)
class SampleSet:
    id: str
    name: str
    token: str
    superclass: str
    description: str
    photos: tuple[str, ...]  # URLs under /examples


@cache
def sample_sets() -> tuple[SampleSet, ...]:
    """Every sample set found in examples/, by folder name."""
    sets = []
    for facts_file in sorted(EXAMPLES_DIR.glob("*/set.json")):
        folder = facts_file.parent.name
        facts = json.loads(facts_file.read_text())
        sets.append(
            SampleSet(
                id=folder,
                name=facts["name"],
                token=facts["token"],
                superclass=facts["superclass"],
                description=facts["description"],
                photos=tuple(f"{URL_PREFIX}/{folder}/{p}" for p in facts["photos"]),
            )
        )
    return tuple(sets)
