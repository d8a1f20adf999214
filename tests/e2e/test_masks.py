"""Masks from the new-concept form in a real Chromium: toy-world photos with their exact object
masks go up together, a mismatched count is refused before sending, and the concept page of
the finished fit says its loss was masked."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.test_product_flow import sign_up
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e]


def _photos_and_masks(folder: Path, n: int) -> tuple[list[Path], list[Path]]:
    """`n` photos of the held-out subject and, in masks/, each one's exact object mask."""
    from workers.toyworld.world import object_mask, render, subject_backgrounds, subject_scene

    rng = random.Random(11)
    backgrounds = subject_backgrounds("candy")
    (folder / "masks").mkdir()
    photos, masks = [], []
    for i in range(n):
        scene = subject_scene("candy", backgrounds[i % len(backgrounds)], rng)
        photos.append(folder / f"candy-{i}.png")
        masks.append(folder / "masks" / f"candy-{i}.png")
        render(scene).save(photos[-1])
        object_mask(scene).save(masks[-1])
    return photos, masks


def test_masks_chosen_on_the_form_reach_the_fit(studio: Stack, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = studio.base_url
    photos, masks = _photos_and_masks(tmp_path, 3)
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    sign_up(page, base, "masker")
    page.goto(f"{base}/concepts/new")
    page.set_input_files("#photos", [str(p) for p in photos])
    page.fill("#name", "Masked candy")
    page.wait_for_selector("#token-hint.ok")
    page.click("#superclass-suggestions button >> nth=0")
    page.click("#advanced summary")
    expect(page.locator("#masks-hint")).to_contain_text("white where your subject is")
    page.fill("#steps", "3")
    page.set_input_files("#masks", [str(m) for m in masks[:2]])
    page.click("#submit")
    expect(page.locator("#form-error")).to_contain_text("one mask per photo, or none")
    page.set_input_files("#masks", [str(m) for m in reversed(masks)])  # paired by name
    page.click("#submit")
    page.wait_for_url(f"{base}/concepts/*")
    page.wait_for_selector("#gen-form", timeout=300_000)  # ready: the page reloaded itself
    expect(page.get_by_test_id("masked-loss")).to_have_text("masked loss: yes")
    context.close()
