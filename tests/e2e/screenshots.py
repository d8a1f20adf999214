"""Screenshots of the main pages at laptop (1280) and phone (390) widths, from a real run.

    python -m tests.e2e.screenshots [--out docs/screenshots] [--fit-steps 40]

Starts `perfusion-studio serve` (embedded default, toy world, CPU) in a temporary directory,
fits a concept and generates with it through the JSON API (timing upload → first image), then
photographs each page in headless Chromium.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import embedded_env
from tests.support.services import CHROMIUM_ARGS, CHROMIUM_PATH
from tests.support.stack import running_stack, wait_for

WIDTHS = {"desktop": (1280, 860), "phone": (390, 844)}


def _photos(name: str, seed: int) -> list[tuple[str, bytes, str]]:
    import io

    from workers.toyworld.world import render_subject, subject_backgrounds

    rng = random.Random(seed)
    files = []
    backgrounds = subject_backgrounds(name)
    for i in range(4):
        out = io.BytesIO()
        render_subject(name, backgrounds[i % len(backgrounds)], rng).save(out, "PNG")
        files.append(("images", (f"{name}-{i}.png", out.getvalue(), "image/png")))
    return files


class Shooter:
    """Open a page, wait for what matters on it, save a full-page screenshot."""

    def __init__(self, page, base: str, out: Path, label: str) -> None:  # type: ignore[no-untyped-def]
        self.page, self.base, self.out, self.label = page, base, out, label

    def __call__(
        self, name: str, path: str, *, wait: str | None = None, settle_ms: int = 400
    ) -> None:
        self.page.goto(self.base + path)
        if wait:
            self.page.wait_for_selector(wait, timeout=120_000)
        self.page.wait_for_timeout(settle_ms)
        self.page.screenshot(path=str(self.out / f"{name}-{self.label}.png"), full_page=True)


def _job_state(client: httpx.Client, job_id: str) -> str:
    return str(client.get(f"/api/jobs/{job_id}").json()["state"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--fit-steps", type=int, default=40)
    parser.add_argument("--gen-steps", type=int, default=10)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with (
        tempfile.TemporaryDirectory() as tmp,
        running_stack(embedded_env(Path(tmp) / "var"), Path(tmp)) as stack,
    ):
        stack.start_web()
        base = stack.base_url
        client = httpx.Client(base_url=base, headers={"Origin": base}, timeout=60)
        client.post("/api/auth/signup", json={"username": "maya", "password": "a long password"})

        started = time.monotonic()
        fields = {"name": "Candy", "token": "<candy>", "superclass": "circle"}
        fields |= {"steps": str(args.fit_steps), "seed": "1"}
        concept = client.post("/api/concepts", data=fields, files=_photos("candy", 1)).json()
        wait_for(lambda: _job_state(client, concept["job"]["id"]) == "succeeded", 900, "fit")
        fitted = time.monotonic() - started
        body = {"prompt": "a photo of a <candy> on a white background", "n": 2, "seed": 5}
        body |= {"steps": args.gen_steps, "concept_id": concept["id"]}
        gen = client.post("/api/generations", json=body).json()
        wait_for(
            lambda: bool(client.get(f"/api/generations/{gen['id']}").json()["images"]),
            900,
            "first image",
            interval_s=0.1,
        )
        first_image = time.monotonic() - started
        wait_for(lambda: _job_state(client, gen["job"]["id"]) == "succeeded", 900, "generation")
        client.patch(f"/api/concepts/{concept['id']}", json={"visibility": "public"})
        print(f"upload → concept ready {fitted:.1f} s, upload → first image {first_image:.1f} s")

        # A second concept left fitting, for the live-progress view.
        fields = {"name": "Dotty square", "token": "<dotty>", "superclass": "square"}
        fields |= {"steps": "2000", "seed": "2"}
        fitting = client.post("/api/concepts", data=fields, files=_photos("dotty", 2)).json()

        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
            for label, (width, height) in WIDTHS.items():
                context = browser.new_context(viewport={"width": width, "height": height})
                cookie = client.cookies.get("studio_session")
                context.add_cookies([{"name": "studio_session", "value": cookie, "url": base}])
                page = context.new_page()
                shot = Shooter(page, base, args.out, label)
                shot("browse", "/")
                page.goto(base + "/concepts/new")
                page.set_input_files("#photos", files=[
                    {"name": n, "mimeType": "image/png", "buffer": b}
                    for _, (n, b, _t) in _photos("tile", 3)
                ])  # fmt: skip
                page.fill("#name", "Bicolor tile")
                page.wait_for_selector("#token-hint.ok")
                page.fill("#superclass", "square")
                page.screenshot(path=str(args.out / f"new-concept-{label}.png"), full_page=True)
                shot(
                    "concept-fitting",
                    f"/concepts/{fitting['id']}",
                    wait="#fit-bar[style]",
                    settle_ms=8000,
                )
                ready = "[data-testid=history-item]"
                shot("concept-ready", f"/concepts/{concept['id']}", wait=ready)
                context.close()
                anon = browser.new_context(viewport={"width": width, "height": height})
                page = anon.new_page()
                shot = Shooter(page, base, args.out, label)
                shot("signin", "/signin")
                shot("shared-concept-visitor", f"/concepts/{concept['id']}")
                anon.close()
            browser.close()
        client.post(f"/api/jobs/{fitting['job']['id']}/cancel")
    print(f"screenshots in {args.out}/")


if __name__ == "__main__":
    main()
