"""The knowledge measures' plumbing, with a stand-in pipeline that draws the world exactly."""

import random
from types import SimpleNamespace

from workers.toyworld import world
from workers.toyworld.evaluate import knowledge_accuracy, pattern_confusion


class _DrawsOneLook:
    """A pipeline stand-in: whatever the prompt, it draws the same striped scene."""

    def __init__(self) -> None:
        rng = random.Random(0)
        look = world.Look("circle", "red", "striped", "green")
        self.image = world.render(world.Scene(look, "white", *world.sample_placement(rng)))

    def __call__(self, prompts: list[str], **_: object) -> SimpleNamespace:
        return SimpleNamespace(images=[self.image for _ in prompts])


def test_pattern_confusion_counts_what_is_read_for_each_pattern_asked() -> None:
    table = pattern_confusion(_DrawsOneLook(), n=24, seed=3, batch=5)  # type: ignore[arg-type]
    assert set(table) == set(world.PATTERNS)
    assert sum(sum(row.values()) for row in table.values()) == 24
    for asked, row in table.items():  # every image is read as striped, whatever was asked
        assert all(count == 0 for read, count in row.items() if read != "striped"), asked
    accuracy = knowledge_accuracy(_DrawsOneLook(), n=24, seed=3, batch=5)  # type: ignore[arg-type]
    assert accuracy["pattern"] == table["striped"]["striped"] / 24
