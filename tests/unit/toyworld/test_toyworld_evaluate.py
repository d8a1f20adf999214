"""The knowledge measures' plumbing, with a stand-in pipeline that draws the world exactly."""

import random
from types import SimpleNamespace

from workers.toyworld import world
from workers.toyworld.evaluate import bare_noun_accuracy, knowledge_accuracy, pattern_confusion


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


class _DrawsWhatIsNamed:
    """A stand-in that draws the shape and background a bare-noun prompt names (in red), and
    records the prompts."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def __call__(self, prompts: list[str], **_: object) -> SimpleNamespace:
        self.prompts += prompts
        images = []
        for prompt in prompts:
            words = prompt.split()
            look = world.Look(words[1], "red")
            images.append(world.render(world.Scene(look, words[-2], 32, 32, 18)))
        return SimpleNamespace(images=images)


def test_bare_noun_prompts_name_shape_and_background_only_and_score_both() -> None:
    pipe = _DrawsWhatIsNamed()
    accuracy = bare_noun_accuracy(pipe, n=12, seed=1, batch=5)  # type: ignore[arg-type]
    assert len(pipe.prompts) == 12
    for prompt in pipe.prompts:
        assert not set(prompt.split()) & (set(world.COLORS) - set(world.BACKGROUNDS)), prompt
        assert not set(prompt.split()) & set(world.PATTERNS), prompt
    assert accuracy == {"shape": 1.0, "background": 1.0, "all": 1.0}
    assert bare_noun_accuracy(_DrawsOneLook(), n=12, seed=1, batch=5)["shape"] < 1.0  # type: ignore[arg-type]
