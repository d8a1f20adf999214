"""The procedural world: deterministic, its captions say what its images show, and its
held-out subjects are drawable (every attribute occurs in training) but never drawn as such."""

import random
from collections import Counter

import numpy as np
import pytest

from workers.toyworld import world


def test_sampling_and_rendering_are_deterministic() -> None:
    a, b = random.Random(7), random.Random(7)
    for _ in range(20):
        sa, sb = world.sample_scene(a), world.sample_scene(b)
        assert sa == sb
        assert world.render(sa).tobytes() == world.render(sb).tobytes()
        assert world.caption(sa, a) == world.caption(sb, b)
    assert world.captions(50, seed=3) == world.captions(50, seed=3)
    assert world.captions(50, seed=3) != world.captions(50, seed=4)


def test_complete_captions_name_what_is_rendered_but_never_the_second_colour() -> None:
    rng = random.Random(0)
    for _ in range(300):
        scene = world.sample_scene(rng)
        look = scene.look
        words = world.caption(scene, rng, complete=True).split()
        assert words[words.index(look.shape) - 2 : words.index(look.shape) + 1] == [
            look.pattern,
            look.color,
            look.shape,
        ]
        assert words[words.index("background") - 1] == scene.background
        assert scene.background not in look.colors
        if look.second is not None:
            assert look.second not in words
        pixels = np.asarray(world.render(scene))
        assert pixels.shape == (world.SIZE, world.SIZE, 3)
        assert tuple(pixels[0, 0]) == world.PALETTE[scene.background]
        inside = np.asarray(world.object_mask(scene)) == 255
        colours = Counter(tuple(p) for p in pixels[inside])
        own = {world.PALETTE[c] for c in look.colors}
        assert own <= set(colours)  # the rest are anti-aliased pattern edges
        assert sum(colours[c] for c in own) > 0.75 * inside.sum()
        main, second = world.PALETTE[look.color], world.PALETTE.get(look.second or "")
        if look.pattern in ("striped", "dotted"):  # the main colour covers most of the object
            assert colours[main] > colours[second]


def test_training_captions_name_the_pattern_only_sometimes() -> None:
    rng = random.Random(1)
    named = 0
    for _ in range(1000):
        scene = world.sample_scene(rng)
        named += scene.look.pattern in world.caption(scene, rng).split()
    assert 0.4 < named / 1000 < 0.6


def test_captions_cover_the_vocabulary_and_use_superclass_nouns() -> None:
    texts = world.captions(2000, seed=0)
    used = {w for t in texts for w in t.split()}
    assert used == set(world.vocabulary())
    assert set(world.SUPERCLASS_NOUNS) <= used
    assert set(world.PATTERNS) <= used


def test_subjects_never_occur_in_training_scenes_yet_each_attribute_does() -> None:
    rng = random.Random(2)
    scenes = [world.sample_training_scene(rng) for _ in range(20000)]
    looks = {s.look for s in scenes}
    for name, subject in world.SUBJECTS.items():
        look = subject.look
        assert look not in looks, name
        assert look.pattern != "plain" and look.second is not None
        # Everything about it is drawable: its shape in its pattern, with either colour in
        # either role, occurs in training.
        assert any(o.shape == look.shape and o.pattern == look.pattern for o in looks)
        assert any(o.color == look.color and o.pattern == look.pattern for o in looks)
        assert any(o.second == look.second and o.pattern == look.pattern for o in looks)
        assert world.breed_of(look) is None  # no word names it
    assert set(world.HARNESS_SUBJECTS).isdisjoint(world.FINAL_SUBJECTS)
    assert len(world.SUBJECTS) >= 6 and len(world.HARNESS_SUBJECTS) == 4


def test_subject_photos_render_outside_the_vocabulary() -> None:
    vocab = set(world.vocabulary())
    for name, subject in world.SUBJECTS.items():
        assert name not in vocab and subject.superclass in vocab
        backgrounds = world.subject_backgrounds(name)
        assert backgrounds and not set(backgrounds) & subject.look.colors
        photos = [world.render_subject(name, backgrounds[0], random.Random(i)) for i in range(4)]
        again = world.render_subject(name, backgrounds[0], random.Random(0))
        assert again.tobytes() == photos[0].tobytes()
        assert len({p.tobytes() for p in photos}) == 4
        colours = {tuple(p) for p in np.asarray(photos[0]).reshape(-1, 3)}
        assert {world.PALETTE[c] for c in subject.look.colors} <= colours
    with pytest.raises(ValueError, match="invisible"):
        world.render_subject("candy", "green", random.Random(0))


def test_a_look_is_checked() -> None:
    with pytest.raises(ValueError):
        world.Look("circle", "red", "striped", None)
    with pytest.raises(ValueError):
        world.Look("circle", "red", "striped", "red")
    with pytest.raises(ValueError):
        world.Look("circle", "red", "plain", "blue")


def test_the_committed_sample_photos_are_the_subjects(tmp_path) -> None:
    """examples/ is what `python -m workers.toyworld.examples` writes, byte for byte."""
    from workers.toyworld.examples import EXAMPLES_DIR, SAMPLE_SUBJECTS, write_examples

    write_examples(tmp_path)
    for name in SAMPLE_SUBJECTS:
        fresh = sorted(p.name for p in (tmp_path / name).iterdir())
        assert fresh == sorted(p.name for p in (EXAMPLES_DIR / name).iterdir())
        for file in fresh:
            assert (tmp_path / name / file).read_bytes() == (
                EXAMPLES_DIR / name / file
            ).read_bytes()


def test_training_can_name_the_pattern_more_often_than_the_default() -> None:
    rng = random.Random(0)
    scenes = [world.sample_scene(rng) for _ in range(400)]
    # (breed_named=0: a breed's look called by its breed word names no attribute)
    always = [world.caption(s, rng, pattern_named=1.0, breed_named=0.0) for s in scenes]
    assert all(s.look.pattern in c for s, c in zip(scenes, always, strict=True))
    default = [world.caption(s, rng) for s in scenes]
    named = sum(s.look.pattern in c for s, c in zip(scenes, default, strict=True)) / len(scenes)
    assert 0.35 < named < 0.65  # PATTERN_NAMED = 0.5


def test_breeds_are_fixed_patterned_looks_each_named_by_one_new_word() -> None:
    assert len(world.BREEDS) == world.BREED_COUNT
    assert len(set(world.BREEDS.values())) == len(world.BREEDS)
    other_words = set(world.vocabulary()) - set(world.BREEDS)
    for word, look in world.BREEDS.items():
        assert word.isalpha() and word not in other_words and word not in world.SUBJECTS
        assert look.pattern != "plain" and look.second is not None
        assert world.breed_of(look) == word
    looks = world.BREEDS.values()
    for attribute, values in (("shape", world.SHAPES), ("pattern", world.PATTERNS[1:])):
        counts = Counter(getattr(look, attribute) for look in looks)
        assert set(counts) == set(values) and min(counts.values()) >= 8, (attribute, counts)
    for attribute in ("color", "second"):
        assert {getattr(look, attribute) for look in looks} == set(world.COLORS)


def test_a_breed_is_called_by_its_word_in_training_but_never_in_complete_captions() -> None:
    rng = random.Random(4)
    scenes = [world.sample_training_scene(rng) for _ in range(3000)]
    breeds = [s for s in scenes if world.breed_of(s.look) is not None]
    assert 0.3 < len(breeds) / len(scenes) < 0.45  # BREED_SHARE 0.35, plus ordinary looks
    by_word = 0
    for scene in breeds:
        word = world.breed_of(scene.look)
        words = world.caption(scene, rng).split()
        if word in words:
            by_word += 1
            # the word alone names the object: no colour, pattern or shape beside it
            assert not set(words) & {*world.COLORS, *world.PATTERNS, *world.SHAPES} - {
                scene.background
            }
        complete = world.caption(scene, rng, complete=True).split()
        assert word not in complete and scene.look.color in complete
    assert 0.7 < by_word / len(breeds) < 0.9  # BREED_NAMED 0.8


def test_training_can_leave_the_main_colour_unsaid_so_a_bare_noun_means_any_colour() -> None:
    rng = random.Random(0)
    scenes = [world.sample_scene(rng) for _ in range(400)]
    default = [world.caption(s, rng, breed_named=0.0) for s in scenes]
    assert all(s.look.color in c.split() for s, c in zip(scenes, default, strict=True))
    some = [world.caption(s, rng, breed_named=0.0, color_named=0.8) for s in scenes]
    unsaid = [s for s, c in zip(scenes, some, strict=True) if s.look.color not in c.split()]
    assert 0.1 < len(unsaid) / len(scenes) < 0.3
    # the noun is still there, and complete captions always name the colour
    assert all(
        s.look.shape in c or "shape" in c or "toy" in c for s, c in zip(scenes, some, strict=True)
    )
    complete = [world.caption(s, rng, complete=True, color_named=0.0) for s in scenes]
    assert all(s.look.color in c.split() for s, c in zip(scenes, complete, strict=True))
