"""What the studio's base model can draw, said on the new-concept page.

The bundled toy world is tiny: one object on a plain background at 64 px. Its facts come from
the base model's folder (`world.json`, written by `workers/toyworld/train.py` from
`workers.toyworld.world`; app/ never imports workers/), so they follow the world as it
changes; any other base model gets the generic suggestions of `rules.superclass_suggestions`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from app.concepts.rules import is_toy_world, superclass_suggestions
from app.config import Settings

WORLD_FILE = "world.json"
"""A base-model folder whose vocabulary is closed describes its world here: `size_px` and
`backgrounds` (its nouns are in `rules.SUPERCLASSES_FILE`, the one source of suggestions)."""


@dataclass(frozen=True)
class BaseModelFacts:
    toy_world: bool
    superclasses: list[str]
    size_px: int | None = None
    backgrounds: list[str] = field(default_factory=list)


def _world(settings: Settings) -> dict[str, object] | None:
    path = Path(settings.base_model) / WORLD_FILE
    try:
        raw = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def base_model_facts(settings: Settings) -> BaseModelFacts:
    """What the base model draws (the toy world's size and backgrounds) and the superclasses
    to suggest (`rules.superclass_suggestions`)."""
    world = _world(settings) if is_toy_world(settings) else None
    if world is not None:
        size = world.get("size_px")
        return BaseModelFacts(
            toy_world=True,
            superclasses=superclass_suggestions(settings),
            size_px=int(size) if isinstance(size, int) else None,
            backgrounds=[str(b) for b in world.get("backgrounds") or []],
        )
    return BaseModelFacts(toy_world=False, superclasses=superclass_suggestions(settings))
