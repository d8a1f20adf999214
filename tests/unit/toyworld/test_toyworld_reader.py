"""The analytic reader recovers the attributes of rendered ground-truth images."""

import random

from workers.toyworld import world
from workers.toyworld.reader import read_attributes


def test_reader_accuracy_on_ground_truth() -> None:
    rng = random.Random(123)
    n, hits = 500, 0
    for _ in range(n):
        scene = world.sample_scene(rng)
        read = read_attributes(world.render(scene))
        hits += (read.shape, read.color, read.background) == (
            scene.shape,
            scene.color,
            scene.background,
        )
    accuracy = hits / n
    print(f"reader accuracy on {n} rendered scenes: {accuracy:.3f}")
    assert accuracy >= 0.98


def test_reader_reports_missing_object() -> None:
    from PIL import Image

    read = read_attributes(Image.new("RGB", (64, 64), world.PALETTE["gray"]))
    assert read.background == "gray" and read.shape is None and read.color is None


def test_reader_tolerates_the_blur_of_generated_images() -> None:
    """Decoded images are softer than renders; the reader must not misread soft edges."""
    from PIL import ImageFilter

    rng = random.Random(7)
    n, hits = 300, 0
    for _ in range(n):
        scene = world.sample_scene(rng)
        blurred = world.render(scene).filter(ImageFilter.GaussianBlur(1.2))
        read = read_attributes(blurred)
        hits += (read.shape, read.color, read.background) == (
            scene.shape,
            scene.color,
            scene.background,
        )
    accuracy = hits / n
    print(f"reader accuracy on {n} blurred scenes: {accuracy:.3f}")
    assert accuracy >= 0.97
