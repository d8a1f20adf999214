"""Browser tests: a real `perfusion-studio serve` (embedded default, toy world on the CPU)
in a temporary data directory, driven by the system Chromium through Playwright."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import TOYWORLD_MODEL
from tests.support.services import CHROMIUM_ARGS, require_chromium
from tests.support.stack import Stack, running_stack

FIT_STEPS = int(os.environ.get("E2E_FIT_STEPS", "40"))
BASE_MODEL = Path(os.environ.get("E2E_BASE_MODEL", str(TOYWORLD_MODEL)))
"""The toy world by default; another local diffusers folder only to debug the flow."""
GEN_STEPS = int(os.environ.get("E2E_GEN_STEPS", "10"))


def embedded_env(data_dir: Path) -> dict[str, str]:
    """The embedded default, sized for a shared 2-core CPU: fits take one image per step
    (the defaults, 4 x 4, cost ~15 s a step here) and the covariance is computed over the toy
    world's own captions (its real prompt distribution) instead of the 12,000-caption corpus."""
    from workers.toyworld.world import captions

    data_dir.mkdir(parents=True, exist_ok=True)
    corpus = data_dir / "toyworld-captions.txt"
    corpus.write_text("\n".join(captions(1000, seed=0)) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(STUDIO_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", STUDIO_DEVICE="cpu")
    env.update(STUDIO_BASE_MODEL=str(BASE_MODEL), STUDIO_COVARIANCE_CAPTIONS=str(corpus))
    env.update(STUDIO_FIT_BATCH_SIZE="1", STUDIO_FIT_GRAD_ACCUM="1")
    env.update(STUDIO_FIT_PREVIEW_EVERY="5", STUDIO_SAMPLE_STEPS=str(GEN_STEPS))
    return env


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The app as a person runs it: one `serve` process, SQLite, in-process worker."""
    if not (BASE_MODEL / "model_index.json").exists():
        pytest.fail(f"the base model is missing at {BASE_MODEL} (the toyworld branch makes it)")
    tmp = tmp_path_factory.mktemp("studio")
    with running_stack(embedded_env(tmp / "var"), tmp) as stack:
        stack.start_web()
        yield stack


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four 'photos' of the held-out subject "candy" (a red circle with green stripes)."""
    from workers.toyworld.world import render_subject, subject_backgrounds

    folder = tmp_path_factory.mktemp("photos")
    rng = random.Random(3)
    paths = []
    for i in range(4):
        path = folder / f"candy-{i}.png"
        backgrounds = subject_backgrounds("candy")
        render_subject("candy", backgrounds[i % len(backgrounds)], rng).save(path)
        paths.append(path)
    return paths
