"""Superclass suggestions come from the base model's folder, never from workers/ code."""

from __future__ import annotations

from pathlib import Path

from app.concepts.rules import COMMON_SUPERCLASSES, SUPERCLASSES_FILE, superclass_suggestions
from app.config import TOYWORLD_MODEL, Settings
from workers.toyworld import world


def test_the_toy_world_lists_its_own_nouns_for_the_web_side() -> None:
    listed = (TOYWORLD_MODEL / SUPERCLASSES_FILE).read_text().split()
    assert listed == [*world.SUPERCLASS_NOUNS, *world.SHAPES]
    suggestions = superclass_suggestions(Settings(base_model=str(TOYWORLD_MODEL)))
    assert suggestions[: len(listed)] == listed
    assert len(suggestions) == len(set(suggestions))


def test_a_model_without_the_list_gets_the_common_superclasses(tmp_path: Path) -> None:
    assert superclass_suggestions(Settings(base_model=str(tmp_path))) == list(COMMON_SUPERCLASSES)
    assert superclass_suggestions(Settings(base_model="org/hub-model")) == list(COMMON_SUPERCLASSES)
