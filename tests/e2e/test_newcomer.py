"""A newcomer's first hour in a real Chromium (issue #15): the API docs, the refusals and
hints a person sees before anything is submitted, importing a downloaded concept back, and
the pages at laptop and phone width.

Screenshots go to $E2E_SCREENSHOTS (default: the test's temporary folder) to be looked at.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.e2e.test_product_flow import sign_up
from tests.support.stack import Stack
from tests.support.webdata import concept_file
from workers.toyworld.world import SHAPES, SUPERCLASS_NOUNS

pytestmark = [pytest.mark.e2e]

WIDTHS = {"desktop": (1280, 860), "phone": (390, 844)}


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("E2E_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


LONGEST_OPTION_FITS = """select => {
  const style = getComputedStyle(select);
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.font = `${style.fontSize} ${style.fontFamily}`;
  const pad = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
  const room = select.clientWidth - pad - 24;
  return Math.max(...[...select.options].map((o) => ctx.measureText(o.text).width)) <= room;
}"""
"""Every option of a select fits its box (24 px left for the arrow): nothing shown clipped."""


def shoot(page, path: Path) -> None:  # type: ignore[no-untyped-def]
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)


def no_horizontal_overflow(page) -> None:  # type: ignore[no-untyped-def]
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"page is {width} px wide"


def test_api_docs_render_with_swagger_ui_5(studio: Stack, browser) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(f"{studio.base_url}/docs")
    operation = page.locator(".opblock-summary-path", has_text="/api/concepts/{concept_id}")
    expect(operation.first).to_be_visible(timeout=30_000)
    assert page.locator(".opblock").count() > 10
    assert page.get_by_text("Unable to render this definition").count() == 0
    expect(page.locator(".version-stamp, .info .version").first).to_be_visible()
    assert not errors, errors
    context.close()


def _photo_files(folder: Path, n: int) -> list[Path]:
    from workers.toyworld.world import render_subject, subject_backgrounds

    rng = random.Random(5)
    backgrounds = subject_backgrounds("candy")
    paths = []
    for i in range(n):
        path = folder / f"toy-{i}.png"
        render_subject("candy", backgrounds[i % len(backgrounds)], rng).save(path)
        paths.append(path)
    return paths


def test_new_concept_says_the_limits_before_submitting(  # type: ignore[no-untyped-def]
    studio: Stack, browser, tmp_path: Path, shots: Path
) -> None:
    base = studio.base_url
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    sign_up(page, base, "newcomer")
    page.goto(f"{base}/concepts/new")
    notice = page.get_by_test_id("toy-world-notice")
    expect(notice).to_contain_text("one simple object on a plain background, 64×64 px")
    suggested = page.locator("#superclass-suggestions button").all_text_contents()
    assert suggested == [*SUPERCLASS_NOUNS, *SHAPES]  # the toy world's nouns, nothing else
    street = tmp_path / "street.png"  # an ordinary photo: a busy scene edge to edge
    noise = random.Random(1).randbytes(96 * 96 * 3)
    Image.frombytes("RGB", (96, 96), noise).save(street)
    page.set_input_files("#photos", [str(street), *map(str, _photo_files(tmp_path, 2))])
    warning = page.get_by_test_id("domain-warning")
    expect(warning).to_contain_text("street.png (its background is not plain)")
    assert "toy-0.png" not in (warning.text_content() or "")
    for label, (w, h) in WIDTHS.items():
        page.set_viewport_size({"width": w, "height": h})
        shoot(page, shots / f"new-concept-warning-{label}.png")
        no_horizontal_overflow(page)
    page.set_viewport_size({"width": 1280, "height": 860})
    page.click(".thumb >> nth=0 >> button")
    expect(warning).to_be_hidden()
    page.click(".thumb >> nth=0 >> button")
    page.click(".thumb >> nth=0 >> button")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG at all")
    page.set_input_files("#photos", [*map(str, _photo_files(tmp_path, 11)), str(broken)])
    hint = page.locator("#photo-hint")
    expect(hint).to_contain_text("broken.png (not a readable image)")
    expect(hint).to_contain_text("Then 11 photos: at most 10 are accepted")  # both at once
    expect(page.locator(".thumb.broken")).to_have_count(1)
    page.click(".thumb.broken button")
    expect(hint).to_have_text("11 photos: at most 10 are accepted — remove 1.")
    page.fill("#name", "Too many")
    page.click("#superclass-suggestions button >> nth=0")
    page.wait_for_selector("#token-hint.ok")
    page.click("#submit")
    expect(page.locator("#form-error")).to_contain_text("at most 10 are accepted")
    assert page.url == f"{base}/concepts/new"  # nothing was sent
    page.click(".thumb >> nth=0 >> button")
    expect(hint).to_have_text("10 photos.")
    context.close()


def test_import_a_downloaded_concept_back_and_prompt_limits(  # type: ignore[no-untyped-def]
    studio: Stack, browser, tmp_path: Path, shots: Path
) -> None:
    base = studio.base_url
    file = tmp_path / "boomerang.safetensors"
    file.write_bytes(concept_file("<boomerang>"))
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    sign_up(page, base, "importer")
    for expected in ("<boomerang>", "<boomerang-2>"):  # the second time it is taken: a suffix
        page.goto(f"{base}/concepts/new")
        page.set_input_files("#import-file", str(file))
        expect(page.get_by_test_id("import-file-name")).to_have_text("boomerang.safetensors")
        expect(page.get_by_test_id("import-facts")).to_contain_text("trained 10 steps")
        expect(page.locator("#import-token")).to_have_value(expected)
        if expected == "<boomerang-2>":
            expect(page.locator("#import-token-hint")).to_contain_text("<boomerang> is taken here")
            for label, (w, h) in WIDTHS.items():
                page.set_viewport_size({"width": w, "height": h})
                shoot(page, shots / f"import-{label}.png")
                no_horizontal_overflow(page)
            page.set_viewport_size({"width": 1280, "height": 860})
        page.click("#import-form button[type=submit]")
        page.wait_for_url(f"{base}/concepts/*")
        assert page.text_content("[data-testid=concept-name]") == expected.strip("<>")
        expect(page.get_by_test_id("training-facts")).to_contain_text(
            "Imported from a concept file. Trained 10 steps"
        )

    prompt = "a <boomerang-2>" + " very" * 2000
    page.fill("#prompt", prompt)
    expect(page.get_by_test_id("prompt-count")).to_contain_text("too many")
    page.click("#gen-submit")
    expect(page.locator("#gen-error")).to_contain_text(f"The prompt has {len(prompt)} characters")
    assert page.locator("[data-testid=result-image]").count() == 0  # nothing was sent
    assert page.input_value("#prompt") == prompt  # and nothing cut
    page.fill("#prompt", "a <boomerang-2> on a blue background")
    page.click("#generate details summary")
    page.fill("#steps", "150")
    page.click("#gen-submit")
    expect(page.locator("#gen-error")).to_contain_text("Steps: 1 to 100.")
    page.fill("#steps", "10")

    page.click("#sweep")  # placeholders are enough to check the row's layout
    row = page.locator(".sweep").first
    expect(row.locator("[data-testid=result-image]")).to_have_count(5)
    expect(page.locator("[data-testid=results]")).to_contain_text("a <boomerang-2> on a blue")
    for label, (w, h) in WIDTHS.items():
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(300)
        shoot(page, shots / f"concept-imported-{label}.png")
        no_horizontal_overflow(page)
        card = page.locator("#generate")
        row_box, card_box = row.bounding_box(), card.bounding_box()
        assert row_box and card_box
        assert row_box["x"] + row_box["width"] <= card_box["x"] + card_box["width"] + 0.5, label
        assert page.locator("[data-testid=visibility]").evaluate(LONGEST_OPTION_FITS), label
    context.close()


WATCH_PAGE = """
class RecordingNotification {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) { window.record("note", title); }
  addEventListener() {}
  close() {}
}
window.Notification = RecordingNotification;
document.addEventListener("DOMContentLoaded", () => {
  const watch = (node, kind) => node && new MutationObserver(
    () => window.record(kind, node.textContent),
  ).observe(node, { childList: true, characterData: true, subtree: true });
  watch(document.querySelector("#fit-phase"), "phase");
  watch(document.querySelector("title"), "title");
});
"""
"""Records (through a binding that survives the page's reload) each text the fit phase and
the tab title show, and every notification, granted without asking."""


def test_waiting_is_visible_and_the_end_is_announced(  # type: ignore[no-untyped-def]
    studio: Stack, browser, tmp_path: Path, shots: Path
) -> None:
    base = studio.base_url
    seen: dict[str, list[str]] = {"phase": [], "title": [], "note": []}
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.expose_function("record", lambda kind, text: seen[kind].append(text))
    context.add_init_script(WATCH_PAGE)
    page = context.new_page()
    sign_up(page, base, "waiter")
    page.goto(f"{base}/concepts/new")
    page.set_input_files("#photos", [str(p) for p in _photo_files(tmp_path, 3)])
    page.fill("#name", "Patient")
    page.wait_for_selector("#token-hint.ok")
    page.click("#superclass-suggestions button >> nth=0")
    page.click("#advanced summary")
    page.fill("#steps", "3")
    page.click("#submit")
    page.wait_for_url(f"{base}/concepts/*")
    page.wait_for_selector("#gen-form", timeout=300_000)  # ready: the page reloaded itself
    phases = seen["phase"]
    loading = [i for i, p in enumerate(phases) if p.startswith("Loading the model")]
    learning = [i for i, p in enumerate(phases) if p == "Learning your subject…"]
    assert loading and (not learning or loading[0] < learning[0]), phases
    assert "Drawing its samples…" in phases, phases
    assert "100% Patient · Perfusion Studio" in seen["title"], seen["title"]  # named once
    assert "✓ Ready: Patient · Perfusion Studio" in seen["title"], seen["title"]
    assert seen["note"] == ["Ready: Patient"]
    context.close()


def test_sample_photos_fill_the_form_and_take_a_free_token(studio: Stack, browser) -> None:  # type: ignore[no-untyped-def]
    """A sample set tried a second time filled its taken token, which the form then refused."""
    base = studio.base_url
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    sign_up(page, base, "sampler")
    page.goto(f"{base}/concepts/new")
    page.click("button.sample-set >> nth=0")
    expect(page.locator("[data-testid=thumbs] .thumb")).to_have_count(4)
    expect(page.locator("#token")).to_have_value("<candy>")
    page.wait_for_selector("#token-hint.ok")
    page.click("#advanced summary")
    page.fill("#steps", "1")
    page.click("#submit")
    page.wait_for_url(re.compile(r".*/concepts/[0-9a-f-]{36}$"))
    job_id = page.get_attribute("#concept", "data-job-id")
    page.request.post(f"{base}/api/jobs/{job_id}/cancel", headers={"Origin": base})
    page.goto(f"{base}/concepts/new")
    page.click("button.sample-set >> nth=0")
    expect(page.locator("#token")).to_have_value("<candy-2>")
    expect(page.locator("#token-hint")).to_have_text("<candy-2> is free.")
    no_horizontal_overflow(page)
    context.close()
