"""What the quality harness runs: its subjects, photos, prompts and each method's recipe."""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import asdict, dataclass, field

from PIL import Image

from bench.common import ROOT
from bench.methods import Recipe
from workers.toyworld.world import (
    BACKGROUNDS,
    FINAL_SUBJECTS,
    HARNESS_SUBJECTS,
    SUBJECTS,
    Look,
    Scene,
    Subject,
    article,
    object_mask,
    object_phrase,
    render,
    sample_placement,
)

DEFAULT_MODEL = ROOT / "workers" / "toyworld" / "model"
TRAIN_BACKGROUNDS = ("gray", "white", "black")
SWEEP = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_STRENGTH = 0.5

# Flat one-colour objects the base model can already name ("a purple star"), fitted from a
# generic superclass: any model that knows its world can show these are learned.
KNOWN_SUBJECTS: dict[str, Subject] = {
    "purple-star": Subject(Look("star", "purple"), "shape"),
    "green-square": Subject(Look("square", "green"), "shape"),
    "orange-ring": Subject(Look("ring", "orange"), "toy"),
    "red-triangle": Subject(Look("triangle", "red"), "toy"),
}
SUBJECT_SETS: dict[str, tuple[str, ...]] = {
    "harness": HARNESS_SUBJECTS,
    "final": FINAL_SUBJECTS,
    "known": tuple(KNOWN_SUBJECTS),
}


def subject(name: str) -> Subject:
    return SUBJECTS[name] if name in SUBJECTS else KNOWN_SUBJECTS[name]


LR_SCALE = 10
"""The toy model's learning rates are every method's usual SD 1.5 rate times this: the ratio of
the toy model's own training lr (1e-3 in its world-1 and world-2 stages) to SD 1.5's (1e-4)."""


def full_recipes(lr_scale: float = LR_SCALE) -> dict[str, Recipe]:
    """Each entry's recipe, scaled to the toy model by one stated rule (`lr_scale` overrides
    the factor, for a before/after at other rates).

    Every method's learning rate is its usual SD 1.5 rate times LR_SCALE (10): DreamBooth
    5e-6 → 5e-5, DreamBooth-LoRA 1e-4 → 1e-3, Textual Inversion 5e-3 → 5e-2, Perfusion 6e-3 /
    3e-2 (embedding / o*_V) → 6e-2 / 3e-1 — the rates the toy model's folder sets for every
    fit (`perfusion_fit.json`). A Perfusion grid on the four harness subjects (2026-12-04,
    `bench.quality.quick`, 80 steps, two seeds each) agreed: ×3 / 6 / 10 gave mean full hits
    0.25 / 0.36 / 0.42 (×1: 0.03 in the harness), prompt hits ≥ 0.97 only at ×10 (model card).
    Every method gets the same budget of 80 steps × batch 4; DreamBooth adds a class batch of
    4 per step (prior preservation, weight 1, 4 class images per subject from the base model).
    Perfusion also runs at the production budget (400 steps × batch 4 on CPU), with the exact
    object mask weighting its loss (the paper's masked loss; the toy world knows the mask
    exactly), and as the better of two 80-step fits (seeds s, s+1) by the fixed-draw denoising
    loss on the photos (`workers.perfusion.photo_loss`: twice the budget).
    """
    k = lr_scale
    perfusion = Recipe(steps=80, batch_size=4, lr_embedding=6e-3 * k, lr_value=3e-2 * k)
    lora = Recipe(steps=80, batch_size=4, lr=1e-4 * k, rank=4)
    return {
        "perfusion": perfusion,
        "perfusion_masked": dataclasses.replace(perfusion, masked=True),
        "perfusion_400": dataclasses.replace(perfusion, steps=400),
        "perfusion_best2": dataclasses.replace(perfusion, restarts=2),
        STUDIO_RECIPE: dataclasses.replace(perfusion, grad_accum=4),
        "lora": lora,
        "lora_b16": dataclasses.replace(lora, grad_accum=4),
        "dreambooth": Recipe(steps=80, batch_size=4, lr=5e-6 * k, class_images=4),
        "textual_inversion": Recipe(steps=80, batch_size=4, lr=5e-3 * k),
    }


STUDIO_RECIPE = "perfusion_b16"
"""The fit the studio runs on the toy model (its folder's `perfusion_fit.json`): 80 steps at
effective batch 16 (4 × 4 accumulated), the re-implementations' batch. The strength sweep runs
on it when it is in the run, and "lora_b16" gives LoRA the same budget."""


def method_family(method: str) -> str:
    """The fitter of a recipe key: "perfusion_masked" → "perfusion", "lora_b16" → "lora"."""
    families = ("perfusion", "lora", "dreambooth", "textual_inversion")
    return next(f for f in families if method == f or method.startswith(f + "_"))


def sweep_method(settings: Settings) -> str:
    """The recipe whose fit the strength sweep runs on: the studio's when it is in the run."""
    return STUDIO_RECIPE if STUDIO_RECIPE in settings.recipes else "perfusion"


@dataclass
class Settings:
    model: str = str(DEFAULT_MODEL)
    subjects: list[str] = field(default_factory=lambda: list(HARNESS_SUBJECTS))
    recipes: dict[str, Recipe] = field(default_factory=full_recipes)
    n_photos: int = 4
    test_backgrounds: int = 2
    n_eval: int = 4  # images per (subject, unseen background)
    n_drift: int = 2  # images per drift prompt
    sweep: tuple[float, ...] = SWEEP
    # images per (strength, background) in the sweep: as many as the default strength's row
    # (the eval images, same seeds), so every strength is read over the same images
    n_sweep: int = 4
    gen_steps: int = 20
    guidance: float = 4.0
    seed: int = 0
    threads: int = 1
    covariance_captions: int = 2000

    def to_json(self) -> str:
        data = asdict(self)
        data["sweep"] = list(self.sweep)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        data = json.loads(text)
        data["recipes"] = {k: Recipe(**v) for k, v in data["recipes"].items()}
        data["sweep"] = tuple(data["sweep"])
        return cls(**data)


def quick_settings(**overrides) -> Settings:
    """Two subjects, fewer steps and images, no production-budget row: minutes."""
    recipes = {
        k: dataclasses.replace(r, steps=max(2, r.steps // 4))
        for k, r in full_recipes().items()
        if k not in ("perfusion_400", "perfusion_best2", STUDIO_RECIPE, "lora_b16")
    }
    base = dict(
        subjects=list(HARNESS_SUBJECTS[:2]), recipes=recipes, n_eval=2, n_sweep=2,
        sweep=(0.0, 0.5, 1.0), gen_steps=10,
    )  # fmt: skip
    base.update(overrides)
    return Settings(**base)


def backgrounds(name: str, count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training backgrounds, unseen test backgrounds), none sharing a colour of the subject."""
    colors = subject(name).look.colors
    train = tuple(b for b in TRAIN_BACKGROUNDS if b not in colors)[:2]
    test = tuple(b for b in BACKGROUNDS if b not in colors and b not in train)
    return train, test[:count]


def photos(
    name: str, n: int, seed: int, on: tuple[str, ...]
) -> tuple[list[Image.Image], list[Image.Image]]:
    """n photos of a subject cycling through the backgrounds `on`, and their exact masks."""
    look = subject(name).look
    scenes = [
        Scene(look, on[k % len(on)], *sample_placement(random.Random(f"{name}-{seed}-{k}")))
        for k in range(n)
    ]
    return [render(s) for s in scenes], [object_mask(s) for s in scenes]


def superclass_prompt(name: str, background: str) -> str:
    return f"a {subject(name).superclass} on a {background} background"


def words_only_prompts(name: str, background: str) -> list[str]:
    """Prompts made of the vocabulary that describe the subject as closely as words can: its
    shape, main colour and pattern, with and without the pattern, and with the superclass."""
    look = subject(name).look
    phrases = {
        object_phrase(look, name_pattern=True),
        object_phrase(look, name_pattern=False),
        object_phrase(look, name_pattern=True, noun=subject(name).superclass),
    }
    return [f"{article(p)} {p} on a {background} background" for p in sorted(phrases)]


def drift_prompts(name: str) -> tuple[str, str]:
    """Prompts without the concept: its superclass in a plain colour, and an unrelated object."""
    s = subject(name)
    plain = next(c for c in ("green", "red", "blue") if c not in s.look.colors)
    other = "ring" if s.look.shape != "ring" else "square"
    dots = next(c for c in ("purple", "yellow", "red") if c not in s.look.colors)
    return (
        f"a plain {plain} {s.superclass} on a white background",
        f"a dotted {dots} {other} on a black background",
    )
