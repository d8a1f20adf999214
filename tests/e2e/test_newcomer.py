"""A newcomer's first hour in a real Chromium (issue #15): the API docs, the refusals and
hints a person sees before anything is submitted, and the pages at phone width."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.test_product_flow import sign_up
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e]


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
