"""Screenshots of issue #15's UI items at desktop (1280) and phone (390) width, from a real run.

    python -m tests.e2e.ux_screenshots [--out docs/screenshots/ux] [--fit-steps 6]

Starts `perfusion-studio serve` (embedded default, toy world, CPU, at most 3 fits an hour) in a
temporary directory, sets up each state mostly through the JSON API (tiny fits), and saves
`<item>-desktop.png` and `<item>-phone.png` for each item: the viewport, or the one element
that shows the item. Each shot also measures whether the page scrolls sideways; that, and the
tab titles seen while a fit runs, go to `<out>/run.txt`.
"""

from __future__ import annotations

import argparse
import io
import random
import re
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

from tests.e2e.conftest import embedded_env
from tests.e2e.screenshots import _photos
from tests.support.services import CHROMIUM_ARGS, CHROMIUM_PATH
from tests.support.stack import running_stack, wait_for

WIDTHS = {"desktop": (1280, 860), "phone": (390, 844)}
FITS_PER_HOUR = 3  # the three fits below use up the hour; the fourth is refused


class Camera:
    """Save one PNG per width of the page or of one element, noting sideways scrolling."""

    def __init__(self, out: Path) -> None:
        self.out, self.log = out, []

    def note(self, line: str) -> None:
        print(line, flush=True)
        self.log.append(line)

    def one(self, page, item: str, label: str, target: str | None) -> None:  # type: ignore[no-untyped-def]
        path = self.out / f"{item}-{label}.png"
        width = page.evaluate("document.documentElement.scrollWidth")
        if target:
            # The element cut from the whole page (an element screenshot scrolls it under
            # the sticky header), with a little margin.
            page.evaluate("window.scrollTo(0, 0)")
            box = page.locator(target).first.bounding_box()
            assert box, target
            x, y = max(box["x"] - 6, 0), max(box["y"] - 6, 0)
            w = min(box["width"] + 12, page.viewport_size["width"] - x)
            clip = {"x": x, "y": y, "width": w, "height": box["height"] + 12}
            page.screenshot(path=str(path), full_page=True, clip=clip)
        else:
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(path))
        small(path)
        view = page.viewport_size["width"]
        flag = "" if width <= view else f"  OVERFLOW: page is {width} px wide"
        self.note(f"{path.name}: {Image.open(path).size}, scrollWidth {width}/{view}{flag}")

    def __call__(self, page, item: str, target: str | None = None, settle_ms: int = 300) -> None:  # type: ignore[no-untyped-def]
        """Both widths on one page, resized between the two."""
        for label, (w, h) in WIDTHS.items():
            page.set_viewport_size({"width": w, "height": h})
            page.wait_for_timeout(settle_ms)
            self.one(page, item, label, target)
        page.set_viewport_size({"width": 1280, "height": 860})


def small(path: Path) -> None:
    """Keep committed PNGs small: a 256-colour palette when that halves the file."""
    raw = path.read_bytes()
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    out = io.BytesIO()
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    if out.tell() < len(raw) / 2:
        path.write_bytes(out.getvalue())


def _state(client: httpx.Client, job_id: str) -> str:
    return str(client.get(f"/api/jobs/{job_id}").json()["state"])


def _fit(client: httpx.Client, name: str, token: str, superclass: str, steps: int, seed: int):  # type: ignore[no-untyped-def]
    fields = {"name": name, "token": token, "superclass": superclass}
    fields |= {"steps": str(steps), "seed": str(seed)}
    response = client.post("/api/concepts", data=fields, files=_photos(token.strip("<>"), seed))
    response.raise_for_status()
    return response.json()


def _file(name: str, data: bytes, mime: str = "image/png") -> dict[str, object]:
    return {"name": name, "mimeType": mime, "buffer": data}


def _toy_pngs(n: int) -> list[dict[str, object]]:
    shots = [_photos("candy", 10 + i // 4)[i % 4][1][1] for i in range(n)]
    return [_file(f"toy-{i}.png", data) for i, data in enumerate(shots)]


def _street_png() -> bytes:
    """An ordinary photo, as the toy world sees one: busy edge to edge."""
    out = io.BytesIO()
    Image.frombytes("RGB", (96, 96), random.Random(1).randbytes(96 * 96 * 3)).save(out, "PNG")
    return out.getvalue()


def _phase(page) -> str:  # type: ignore[no-untyped-def]
    return page.text_content("#fit-phase") or ""


def _until(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def main() -> None:  # noqa: PLR0915  (one story, in order)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots/ux"))
    parser.add_argument("--fit-steps", type=int, default=6)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cam = Camera(args.out)
    started = time.monotonic()

    with tempfile.TemporaryDirectory() as tmp:
        env = embedded_env(Path(tmp) / "var") | {"STUDIO_FITS_PER_HOUR": str(FITS_PER_HOUR)}
        with running_stack(env, Path(tmp)) as stack:
            stack.start_web()
            base = stack.base_url
            api = httpx.Client(base_url=base, headers={"Origin": base}, timeout=60)
            api.post("/api/auth/signup", json={"username": "maya", "password": "a long password"})

            from playwright.sync_api import sync_playwright

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM_PATH, args=CHROMIUM_ARGS)
                cookie = api.cookies.get("studio_session")
                ctx = browser.new_context(viewport={"width": 1280, "height": 860})
                ctx.add_cookies([{"name": "studio_session", "value": cookie, "url": base}])
                page = ctx.new_page()

                # Fit 1 of 3, a tiny one: the phase before step 1 (the first fit loads the
                # model, the longest wait for step 1), then a ready concept with samples.
                ready = _fit(api, "Candy", "<candy>", "circle", args.fit_steps, 1)
                phone = ctx.new_page()
                phone.set_viewport_size({"width": 390, "height": 844})
                for p in (page, phone):
                    p.goto(f"{base}/concepts/{ready['id']}")
                for p, label in ((page, "desktop"), (phone, "phone")):
                    try:
                        _until(lambda p=p: "Loading the model" in _phase(p), 60, "loading")
                    except TimeoutError:
                        cam.note(f"waiting-loading-{label}: missed, the phase is {_phase(p)!r}")
                        continue
                    cam.one(p, "waiting-loading", label, "#fit")
                    cam.note(f"  phase right after that shot: {_phase(p)!r}")
                phone.close()
                wait_for(lambda: _state(api, ready["job"]["id"]) == "succeeded", 600, "fit")
                ready_url = f"/api/concepts/{ready['id']}"
                wait_for(lambda: api.get(ready_url).json()["samples"], 300, "samples")
                concept_file = api.get(f"{ready_url}/file").content
                cam.note(f"fit ready after {time.monotonic() - started:.0f} s")

                page.goto(base + "/docs")
                page.wait_for_selector(".opblock-summary-path", timeout=60_000)
                cam(page, "docs-swagger-ui")

                page.goto(base + "/concepts/new")
                cam(page, "new-concept-toy-world")
                cam(page, "superclass-suggestions", "#superclass-suggestions")
                cam(page, "sample-sets", "[data-testid=sample-sets]")
                page.set_input_files("#photos", [_file("street.png", _street_png()), *_toy_pngs(2)])
                page.wait_for_selector("[data-testid=domain-warning]:not([hidden])")
                cam(page, "domain-warning", "#concept-form")
                page.goto(base + "/concepts/new")
                page.set_input_files(
                    "#photos", [*_toy_pngs(11), _file("broken.png", b"not a PNG at all")]
                )
                page.wait_for_selector(".thumb.broken")
                hint = page.locator("#photo-hint")
                _until(lambda: "broken.png" in (hint.text_content() or ""), 30, "photo hint")
                cam(page, "photo-limits", "#concept-form")
                page.goto(base + "/concepts/new")
                page.click(".sample-set >> nth=0")
                page.wait_for_selector("#token-hint.ok")
                page.wait_for_timeout(500)
                cam(page, "sample-photos", "#concept-form")

                page.goto(base + "/concepts/new")
                cam(page, "import-picker", "#import-form >> xpath=..")
                page.set_input_files(
                    "#import-file",
                    [_file("candy.safetensors", concept_file, "application/octet-stream")],
                )
                page.wait_for_selector("[data-testid=import-facts]:not([hidden])")
                _until(lambda: page.input_value("#import-token") == "<candy-2>", 30, "free token")
                page.wait_for_timeout(500)
                cam(page, "import-free-token", "#import-form >> xpath=..")
                page.click("#import-form button[type=submit]")
                page.wait_for_url(re.compile(r".*/concepts/[0-9a-f-]{36}$"))
                imported_page = page.url

                # Fit 2 of 3, a long one, left running: progress, the tab title, a wait.
                fitting = _fit(api, "Dotty square", "<dotty>", "square", 2000, 2)
                page.goto(f"{base}/concepts/{fitting['id']}")

                def step() -> int:
                    shown = re.match(r"\d+", page.text_content("#fit-step") or "")
                    return int(shown.group()) if shown else 0

                _until(lambda: step() >= 25, 300, "25 steps")  # over 1 %: its pace is known
                page.wait_for_timeout(6000)  # and a heartbeat has stored it
                cam.note(f"tab title while fitting: {page.title()!r}")
                cam(page, "waiting-progress")
                cam(page, "trained-while-fitting", "[data-testid=training-facts]")

                # Fit 3 of 3, queued behind it: an estimated wait.
                queued = _fit(api, "Striped tile", "<tile>", "square", 2000, 3)
                page.goto(f"{base}/concepts/{queued['id']}")
                page.wait_for_timeout(1500)
                cam.note(f"queued phase: {_phase(page)!r}")
                cam(page, "waiting-queued", "#fit")
                api.post(f"/api/jobs/{queued['job']['id']}/cancel")

                # A public concept whose samples are still queued: a visitor's Browse.
                again = api.post(
                    "/api/concepts/import",
                    data={"token": "<candy-3>", "name": "Candy, public, no samples yet"},
                    files={"file": ("candy.safetensors", concept_file)},
                ).json()
                api.patch(f"/api/concepts/{again['id']}", json={"visibility": "public"})
                visitor = browser.new_context(viewport={"width": 1280, "height": 860})
                vpage = visitor.new_page()
                vpage.goto(base + "/")
                cam(vpage, "browse-visitor-placeholder", "[data-testid=public-concepts]")
                visitor.close()

                api.post(f"/api/jobs/{fitting['job']['id']}/cancel")
                wait_for(lambda: _state(api, fitting["job"]["id"]) == "canceled", 120, "cancel")
                page.goto(f"{base}/concepts/{fitting['id']}")
                page.wait_for_selector("#fit-again-row:not([hidden])")
                cam(page, "fit-again")
                page.goto(base + "/")
                cam(page, "browse-owner-no-blank", "[data-testid=my-concepts]")

                page.goto(imported_page)
                page.wait_for_selector("[data-testid=samples] img", timeout=300_000)
                cam(page, "imported-concept")
                cam(page, "imported-training-facts", "[data-testid=training-facts]")

                page.goto(f"{base}/concepts/{ready['id']}")
                page.wait_for_selector("#gen-form")
                cam(page, "trained-when-done", "[data-testid=training-facts]")
                cam(page, "samples-say-their-prompt", "[data-testid=samples-prompt] >> xpath=..")
                cam(page, "strength-explained", "#gen-form")
                cam(page, "visibility-select", "#manage")
                page.fill("#prompt", "a <candy> on a blue background")
                page.click("#sweep")
                row = page.locator(".sweep").first
                row.locator("[data-testid=result-image]").nth(4).wait_for()
                _until(lambda: page.locator(".sweep img[src*='/api/']").count() >= 5, 300, "sweep")
                page.wait_for_timeout(800)
                cam(page, "strength-sweep-row", "#generate")
                prompt = "a <candy>" + " very" * 110
                page.fill("#prompt", prompt)
                page.click("#gen-submit")
                page.wait_for_selector("#gen-error:not([hidden])")
                cam(page, "prompt-limit", "#gen-form")

                # The fourth fit of the hour, from the sample photos: refused, with a wait.
                page.goto(base + "/concepts/new")
                page.click(".sample-set >> nth=1")
                page.wait_for_selector("#token-hint.ok")
                page.click("#submit")
                page.wait_for_selector("#form-error:not([hidden])")
                cam.note(f"quota message: {page.text_content('#form-error')!r}")
                cam(page, "quota-try-again", "#concept-form")
                browser.close()
    (args.out / "run.txt").write_text("\n".join(cam.log) + "\n")
    print(f"screenshots in {args.out}/ after {time.monotonic() - started:.0f} s")
    overflowing = [line for line in cam.log if "OVERFLOW" in line]
    if overflowing:  # a page that scrolls sideways at its width is a defect, not a picture
        raise SystemExit("\n".join(overflowing))


if __name__ == "__main__":
    main()
