"""The analytic reader recovers every attribute of rendered (and blurred) ground-truth images."""

import json
import random
from pathlib import Path

from PIL import Image, ImageFilter

from workers.toyworld import world
from workers.toyworld.reader import read_attributes


def _accuracy(n: int, seed: int, blur: float) -> dict[str, float]:
    rng = random.Random(seed)
    hits = {"shape": 0, "color": 0, "pattern": 0, "second": 0, "background": 0, "all": 0}
    for _ in range(n):
        scene = world.sample_scene(rng)
        image = world.render(scene)
        if blur:
            image = image.filter(ImageFilter.GaussianBlur(blur))
        read = read_attributes(image)
        ok = {
            "shape": read.shape == scene.shape,
            "color": read.color == scene.color,
            "pattern": read.pattern == scene.look.pattern,
            "second": read.second == scene.look.second,
            "background": read.background == scene.background,
        }
        ok["all"] = all(ok.values()) and read.matches(scene.look)
        for key, value in ok.items():
            hits[key] += value
    return {key: value / n for key, value in hits.items()}


def test_reader_accuracy_on_ground_truth() -> None:
    accuracy = _accuracy(500, 123, blur=0)
    print(f"reader accuracy on 500 rendered scenes: {accuracy}")
    assert min(accuracy.values()) >= 0.98


def test_reader_tolerates_the_blur_of_generated_images() -> None:
    """Decoded images are softer than renders; the reader must not misread soft edges."""
    accuracy = _accuracy(300, 7, blur=1.2)
    print(f"reader accuracy on 300 blurred scenes: {accuracy}")
    assert min(accuracy.values()) >= 0.93


def test_reader_reads_every_subject() -> None:
    for name, subject in world.SUBJECTS.items():
        for k, background in enumerate(world.subject_backgrounds(name)):
            image = world.render_subject(name, background, random.Random(k))
            assert read_attributes(image).matches(subject.look), (name, background)


def test_reader_reports_missing_object() -> None:
    read = read_attributes(Image.new("RGB", (64, 64), world.PALETTE["gray"]))
    assert read.background == "gray" and read.shape is None and read.color is None


def test_reader_agrees_with_the_patterns_a_person_sees_in_generated_images() -> None:
    """120 generated images labelled by eye (data/labelled.json). Generated stripes and dots
    are often thin and off-palette; the reader that took the layout from palette-snapped pixels
    alone agreed on 51 of 57 (tuning set) and 52 of 59 (validation set) clear images, calling
    visibly striped objects plain. This one: 55 / 57 and 58 / 59."""
    data = Path(__file__).parent / "data"
    facts = json.loads((data / "labelled.json").read_text())
    sheet = Image.open(data / "labelled.png").convert("RGB")
    size, columns = facts["tile_px"], facts["columns"]
    agreed: dict[str, list[bool]] = {}
    for item in facts["images"]:
        if item["seen"] == "unclear":
            continue
        row, col = divmod(item["tile"], columns)
        tile = sheet.crop((col * size, row * size, (col + 1) * size, (row + 1) * size))
        agreed.setdefault(item["set"], []).append(read_attributes(tile).pattern == item["seen"])
    rates = {name: sum(hits) / len(hits) for name, hits in agreed.items()}
    print(f"reader agrees with the eye on the pattern: {rates}")
    assert set(rates) == {"tuning", "validation"}
    assert min(rates.values()) >= 0.95
