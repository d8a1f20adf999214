"""Upload → first generated image on the embedded default, through the HTTP API.

    python -m bench.first_image [--after-start 10]

Starts `perfusion-studio serve` on a fresh data directory (SQLite, in-process worker, the
bundled toy-world model, default fit settings), signs up, waits `--after-start` seconds (a
person choosing four photos; the worker warms its model meanwhile, STUDIO_WORKER_WARM_START),
uploads 4 photos of a held-out toy concept, waits for the concept, generates one image and
prints the timings from the upload.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import subprocess
import sys
import tempfile
import time

import httpx

from bench.common import ROOT
from workers.toyworld import world

FINAL = ("succeeded", "failed", "canceled")


def _wait(client: httpx.Client, job_id: str, poll_s: float) -> dict:
    while (job := client.get(f"/api/jobs/{job_id}").json())["state"] not in FINAL:
        time.sleep(poll_s)
    return job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--after-start", type=float, default=10.0, help="seconds before upload")
    args = parser.parse_args(argv)
    port = 8765
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        env = dict(os.environ, STUDIO_DATA_DIR=data_dir, STUDIO_PORT=str(port))
        env.pop("STUDIO_REDIS_URL", None)
        env.pop("STUDIO_DATABASE_URL", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            client = httpx.Client(base_url=url, timeout=60, headers={"Origin": url})
            for _ in range(300):
                try:
                    client.get("/api/health")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            password = "correct horse battery staple"
            signup = {"username": "timer", "password": password}
            client.post("/api/auth/signup", json=signup).raise_for_status()
            time.sleep(args.after_start)
            rng = random.Random(0)
            files = []
            for k, background in enumerate(("gray", "white", "black", "blue")):
                buffer = io.BytesIO()
                world.render_subject("candy", background, rng).save(buffer, "PNG")
                files.append(("images", (f"photo{k}.png", buffer.getvalue(), "image/png")))
            form = {"name": "Candy", "token": "<candy>", "superclass": "circle"}
            started = time.monotonic()
            created = client.post("/api/concepts", data=form, files=files)
            created.raise_for_status()
            fit = _wait(client, created.json()["job"]["id"], 0.5)
            ready_s = time.monotonic() - started
            body = {"prompt": "a <candy> on a blue background", "n": 1}
            generation = client.post("/api/generations", json=body)
            generation.raise_for_status()
            image = _wait(client, generation.json()["job"]["id"], 0.2)
            total_s = time.monotonic() - started
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"Upload {args.after_start:.0f} s after the server answered (warm start: see --help).")
    print()
    print("| step | state | seconds from upload |")
    print("|---|---|---|")
    print(f"| concept ready (fit + 2 samples) | {fit['state']} | {ready_s:.1f} |")
    print(f"| first generated image (25 steps) | {image['state']} | {total_s:.1f} |")
    return 0 if fit["state"] == image["state"] == "succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
