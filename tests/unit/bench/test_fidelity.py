"""The concept-fidelity descriptor separates the held-out concepts (no model needed)."""

from __future__ import annotations

from bench import fidelity
from bench.quality import backgrounds, photos
from workers.toyworld.world import HELDOUT_CONCEPTS, Scene, render


def test_new_photos_match_their_own_concept_and_not_the_others() -> None:
    refs, fresh = {}, {}
    for name in HELDOUT_CONCEPTS:
        train, test = backgrounds(name, 2)
        refs[name] = fidelity.reference(photos(name, 4, 0, train))
        fresh[name] = photos(name, 4, 1, test)
    for name, ref in refs.items():
        own = fidelity.mean_similarity(fresh[name], ref)
        assert own > 0.5, (name, own)
        for other in HELDOUT_CONCEPTS:
            if other != name:
                assert fidelity.mean_similarity(fresh[other], ref) < own / 2, (name, other)


def test_a_flat_object_of_the_superclass_scores_below_the_concept() -> None:
    for name, concept in HELDOUT_CONCEPTS.items():
        train, test = backgrounds(name, 2)
        ref = fidelity.reference(photos(name, 4, 0, train))
        own = fidelity.mean_similarity(photos(name, 4, 1, test), ref)
        for color in concept.colors:
            flat = render(Scene(concept.shape, color, test[0], 32, 32, 18))
            assert fidelity.similarity(flat, ref) < own, (name, color)


def test_no_object_scores_zero() -> None:
    ref = fidelity.reference(photos("candy", 2, 0, ("gray",)))
    empty = render(Scene("circle", "red", "red", 32, 32, 18))  # same colour as background
    assert fidelity.similarity(empty, ref) == 0.0
