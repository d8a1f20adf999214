"""The procedural world: deterministic, and its captions say what its images show."""

import random

import numpy as np

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


def test_complete_captions_name_what_is_rendered() -> None:
    rng = random.Random(0)
    for _ in range(200):
        scene = world.sample_scene(rng)
        words = world.caption(scene, rng, complete=True).split()
        assert scene.shape in words and scene.color in words and scene.background in words
        assert words.index(scene.color) + 1 == words.index(scene.shape)
        assert words[words.index("background") - 1] == scene.background
        assert scene.color != scene.background
        pixels = np.asarray(world.render(scene))
        assert pixels.shape == (world.SIZE, world.SIZE, 3)
        assert tuple(pixels[0, 0]) == world.PALETTE[scene.background]
        if scene.shape != "ring":  # a ring's centre is background
            centre = pixels[round(scene.cy), round(scene.cx)]
            assert tuple(centre) == world.PALETTE[scene.color]


def test_captions_cover_the_vocabulary_and_use_superclass_nouns() -> None:
    texts = world.captions(2000, seed=0)
    used = {w for t in texts for w in t.split()}
    assert used == set(world.vocabulary())
    assert set(world.SUPERCLASS_NOUNS) <= used
    assert len(world.SHAPES) >= 5 and len(world.COLORS) >= 5 and len(world.BACKGROUNDS) >= 5


def test_heldout_concepts_render_and_are_outside_the_vocabulary() -> None:
    vocab = set(world.vocabulary())
    for name, concept in world.HELDOUT_CONCEPTS.items():
        assert name not in vocab
        assert concept.superclass in vocab
        photos = [world.render_concept(name, "gray", random.Random(i)) for i in range(4)]
        again = world.render_concept(name, "gray", random.Random(0))
        assert again.tobytes() == photos[0].tobytes()
        assert len({p.tobytes() for p in photos}) == 4
        pixels = np.asarray(photos[0]).reshape(-1, 3)
        colours = {tuple(p) for p in pixels}
        for colour in concept.colors:
            assert world.PALETTE[colour] in colours
