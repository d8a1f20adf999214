"""The product end to end in headless Chromium, on the embedded default with the toy world."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.e2e.conftest import FIT_STEPS, GEN_STEPS
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIT_TIMEOUT_MS = 300_000
STEP = re.compile(r"^\d+/\d+$")


def wait_until(predicate, timeout_ms: int) -> None:  # type: ignore[no-untyped-def]
    """Poll from Python: the strict CSP forbids Playwright's string-evaluated waits."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def sign_up(page, base: str, username: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/signup")
    page.fill("#username", username)
    page.fill("#password", "a long password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    assert page.text_content("[data-testid=who]") == username


def start_concept(page, base: str, photos: list[Path], name: str, steps: int) -> str:  # type: ignore[no-untyped-def]
    """Fill the new-concept form and submit; returns the concept page URL."""
    page.goto(f"{base}/concepts/new")
    page.set_input_files("#photos", [str(p) for p in photos])
    assert page.locator("[data-testid=thumbs] .thumb").count() == len(photos)
    page.fill("#name", name)
    token = "<" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ">"
    assert page.input_value("#token") == token  # suggested from the name
    page.wait_for_selector("#token-hint.ok")  # and checked to be free
    page.click("#superclass-suggestions [data-superclass=toy]")
    page.click("#advanced summary")
    page.fill("#steps", str(steps))
    page.fill("#seed", "1")
    page.click("#submit")
    page.wait_for_url(re.compile(r".*/concepts/[0-9a-f-]{36}$"))
    return page.url


def test_upload_fit_generate_download_share_revoke(studio: Stack, browser, photos) -> None:  # type: ignore[no-untyped-def]
    base = studio.base_url
    owner = browser.new_context(accept_downloads=True)
    page = owner.new_page()
    sign_up(page, base, "owner")

    started = time.monotonic()
    concept_url = start_concept(page, base, photos, "Candy", FIT_STEPS)
    # Live progress: steps arrive over the websocket, then the page turns into the generator.
    expect(page.get_by_test_id("fit-step")).to_have_text(STEP, timeout=FIT_TIMEOUT_MS)
    page.wait_for_selector("#gen-form", timeout=FIT_TIMEOUT_MS)
    fitted_s = time.monotonic() - started
    assert page.text_content("[data-testid=status]") == "ready"
    assert page.locator("[data-testid=samples] img").count() == 2

    page.fill("#prompt", "a photo of a <candy> on a white background")
    page.wait_for_selector("[data-testid=tokens-found] >> text=✓ <candy>")
    page.select_option("#n", "2")
    page.click("#generate details summary")
    page.fill("#steps", str(GEN_STEPS))
    page.click("#gen-submit")
    results = page.locator("[data-testid=results] [data-testid=result-image] img")
    results.first.wait_for(timeout=FIT_TIMEOUT_MS)
    first_image_s = time.monotonic() - started
    expect(results).to_have_count(2, timeout=FIT_TIMEOUT_MS)
    for src in [results.nth(i).get_attribute("src") for i in range(2)]:
        served = page.request.get(f"{base}{src}")
        assert served.ok and served.body().startswith(b"\x89PNG"), src
    print(f"\nupload → ready {fitted_s:.1f} s; upload → first image {first_image_s:.1f} s")
    page.wait_for_selector("[data-testid=history-item]")

    results.first.click()
    with page.expect_download() as download_info:
        page.click("[data-testid=download-image]")
    png = Path(download_info.value.path()).read_bytes()
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    embedded = " ".join(str(v) for v in image.info.values())
    assert "<candy>" in embedded and "white background" in embedded  # parameters in text chunks
    page.click("#lightbox-close")

    page.select_option("[data-testid=visibility]", "unlisted")
    page.wait_for_selector("#share:not([hidden])")
    page.click("#share-create")
    expect(page.get_by_test_id("share-url")).to_have_value(re.compile("/s/"))
    share_url = page.input_value("[data-testid=share-url]")

    visitor = browser.new_context()
    other = visitor.new_page()
    sign_up(other, base, "visitor")
    other.goto(concept_url)
    assert other.text_content("[data-testid=not-found]")  # unlisted: not without the link
    other.goto(share_url)
    assert other.url == concept_url
    assert other.text_content("[data-testid=concept-name]") == "Candy"
    assert other.locator("[data-testid=samples] img").count() == 2
    other.wait_for_selector("[data-testid=tokens-found] >> text=✓ <candy>")  # may generate

    page.click("#share-revoke")
    page.wait_for_selector("#share-revoke[hidden]", state="attached")
    other.reload()
    assert "not shared" in (other.text_content("[data-testid=not-found]") or "")
    other.goto(share_url)
    assert "revoked" in (other.text_content("[data-testid=not-found]") or "")
    visitor.close()
    owner.close()


def test_reloading_mid_fit_resumes_the_live_view(studio: Stack, browser, photos) -> None:  # type: ignore[no-untyped-def]
    base = studio.base_url
    context = browser.new_context()
    page = context.new_page()
    sign_up(page, base, "reloader")
    start_concept(page, base, photos, "Dotty", max(FIT_STEPS * 10, 200))

    def seen_step() -> int:
        text = page.text_content("[data-testid=fit-step]") or ""
        return int(text.split("/")[0]) if "/" in text else 0

    def loss_points() -> int:
        return len((page.get_attribute("#fit-loss polyline", "points") or "").split())

    wait_until(lambda: seen_step() >= 3 and loss_points() >= 2, FIT_TIMEOUT_MS)
    before, points_before = seen_step(), loss_points()
    page.reload()
    # The replay brings back at least every step seen before, loss curve included.
    wait_until(lambda: seen_step() >= before, 30_000)
    assert loss_points() >= points_before
    assert page.text_content("[data-testid=status]") == "fitting"

    page.click("#fit-cancel")
    expect(page.get_by_test_id("fit-phase")).to_contain_text("canceled", timeout=60_000)
    assert page.text_content("[data-testid=status]") == "canceled"
    context.close()
