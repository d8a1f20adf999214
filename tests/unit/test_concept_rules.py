"""Superclass suggestions come from the base model's folder, never from workers/ code."""

from __future__ import annotations

from pathlib import Path

from app.concepts.basemodel import base_model_facts
from app.concepts.rules import COMMON_SUPERCLASSES, SUPERCLASSES_FILE, superclass_suggestions
from app.config import TOYWORLD_MODEL, Settings
from workers.toyworld import world


def test_the_toy_world_lists_its_own_nouns_for_the_web_side() -> None:
    listed = (TOYWORLD_MODEL / SUPERCLASSES_FILE).read_text().split()
    assert listed == [*world.SUPERCLASS_NOUNS, *world.SHAPES]
    # Only its own nouns: its vocabulary is closed.
    assert superclass_suggestions(Settings(base_model=str(TOYWORLD_MODEL))) == listed


def test_another_model_lists_its_own_nouns_before_the_common_ones(tmp_path: Path) -> None:
    (tmp_path / SUPERCLASSES_FILE).write_text("corgi\ndog\n")
    suggestions = superclass_suggestions(Settings(base_model=str(tmp_path)))
    assert suggestions[:2] == ["corgi", "dog"] and "person" in suggestions
    assert len(suggestions) == len(set(suggestions))


def test_a_model_without_the_list_gets_the_common_superclasses(tmp_path: Path) -> None:
    assert superclass_suggestions(Settings(base_model=str(tmp_path))) == list(COMMON_SUPERCLASSES)
    assert superclass_suggestions(Settings(base_model="org/hub-model")) == list(COMMON_SUPERCLASSES)


def test_the_toy_world_describes_its_world_for_the_new_concept_page() -> None:
    facts = base_model_facts(Settings(base_model=str(TOYWORLD_MODEL)))
    assert facts.toy_world
    assert facts.superclasses == [*world.SUPERCLASS_NOUNS, *world.SHAPES]
    assert facts.size_px == world.SIZE and facts.backgrounds == list(world.BACKGROUNDS)


def test_another_base_model_gets_the_generic_facts(tmp_path: Path) -> None:
    facts = base_model_facts(Settings(base_model=str(tmp_path)))
    assert not facts.toy_world and facts.superclasses == list(COMMON_SUPERCLASSES)
