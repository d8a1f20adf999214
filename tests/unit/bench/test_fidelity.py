"""The correlogram descriptor separates the held-out subjects (no model needed)."""

from __future__ import annotations

from bench import fidelity
from bench.quality.settings import backgrounds, photos
from workers.toyworld.reader import read_attributes
from workers.toyworld.world import HARNESS_SUBJECTS, SUBJECTS, Look, Scene, render


def test_new_photos_match_their_own_subject_and_not_the_others() -> None:
    """The correlogram counts colour pairs, so subjects that share a colour overlap: they must
    still score below the subject itself, and those that share none below half of it. (The
    headline metric, the reader's hit rate, tells every subject apart: see the next test.)"""
    refs, fresh = {}, {}
    for name in HARNESS_SUBJECTS:
        train, test = backgrounds(name, 2)
        refs[name] = fidelity.reference(photos(name, 4, 0, train)[0])
        fresh[name] = photos(name, 4, 1, test)[0]
    for name, ref in refs.items():
        own = fidelity.mean_similarity(fresh[name], ref)
        assert own > 0.5, (name, own)
        for other in HARNESS_SUBJECTS:
            if other == name:
                continue
            score = fidelity.mean_similarity(fresh[other], ref)
            shared = SUBJECTS[name].look.colors & SUBJECTS[other].look.colors
            assert score < (own if shared else own / 2), (name, other, score, own)


def test_the_reader_tells_every_subject_from_the_others() -> None:
    for name in SUBJECTS:
        images = photos(name, 4, 1, backgrounds(name, 2)[1])[0]
        for other, subject in SUBJECTS.items():
            hits = [read_attributes(im).matches(subject.look) for im in images]
            assert all(hits) if other == name else not any(hits), (name, other)


def test_a_flat_object_of_the_superclass_scores_below_the_subject() -> None:
    for name in HARNESS_SUBJECTS:
        look = SUBJECTS[name].look
        train, test = backgrounds(name, 2)
        ref = fidelity.reference(photos(name, 4, 0, train)[0])
        own = fidelity.mean_similarity(photos(name, 4, 1, test)[0], ref)
        for color in look.colors:
            flat = render(Scene(Look(look.shape, color), test[0], 32, 32, 18))
            assert fidelity.similarity(flat, ref) < own, (name, color)


def test_no_object_scores_zero() -> None:
    ref = fidelity.reference(photos("candy", 2, 0, ("gray",))[0])
    empty = render(Scene(Look("circle", "red"), "red", 32, 32, 18))  # same colour as background
    assert fidelity.similarity(empty, ref) == 0.0
