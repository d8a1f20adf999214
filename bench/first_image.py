"""Upload → first generated image on the embedded default, through the HTTP API.

    python -m bench.first_image [--after-start 10] [--threads 1] [--log server.log]

Starts `perfusion-studio serve` on a fresh data directory (SQLite, in-process worker, the
bundled toy-world model, default fit settings), signs up, waits `--after-start` seconds (a
person choosing four photos; the worker warms its model meanwhile, STUDIO_WORKER_WARM_START),
uploads 4 photos of a held-out toy concept, waits for the concept, generates one image and
prints the timings from the upload: the two totals, then each phase from the job rows'
timestamps (queued, claimed by the worker, finished) and the fit job's own `timings_s`.
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
from datetime import datetime
from typing import Any

import httpx

from bench.common import ROOT
from workers.toyworld import world

FINAL = ("succeeded", "failed", "canceled")


def _wait(client: httpx.Client, job_id: str, poll_s: float) -> dict:
    while (job := client.get(f"/api/jobs/{job_id}").json())["state"] not in FINAL:
        time.sleep(poll_s)
    return job


def _at(job: dict[str, Any], field: str, upload_at: float) -> float | None:
    """Seconds from the upload to one of a job row's timestamps (same machine's clock)."""
    value = job.get(field)
    if value is None:
        return None
    return datetime.fromisoformat(value).timestamp() - upload_at


def phases(
    fit: dict[str, Any], image: dict[str, Any], upload_at: float
) -> list[tuple[str, float | None]]:
    """(phase, seconds from the upload at its end) from the two jobs' rows: when each was
    queued, claimed and finished, and the fit handler's own phases in between."""
    rows: list[tuple[str, float | None]] = [
        ("fit queued (upload answered)", _at(fit, "enqueued_at", upload_at)),
        ("fit claimed by the worker", _at(fit, "started_at", upload_at)),
    ]
    claimed = rows[-1][1]
    result = fit.get("result") or {}
    timings, cpu = result.get("timings_s") or {}, result.get("timings_cpu_s") or {}
    if claimed is not None:
        at = claimed
        for name, seconds in timings.items():
            at += seconds
            used = f", CPU {cpu[name]:.2f} s" if name in cpu else ""
            rows.append((f"  fit: {name} done (+{seconds:.2f} s{used})", at))
    rows += [
        ("fit succeeded: concept ready", _at(fit, "finished_at", upload_at)),
        ("generation queued", _at(image, "enqueued_at", upload_at)),
        ("generation claimed by the worker", _at(image, "started_at", upload_at)),
        ("generation succeeded: first image", _at(image, "finished_at", upload_at)),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--after-start", type=float, default=10.0, help="seconds before upload")
    parser.add_argument(
        "--threads", type=int, help="the server's torch threads (OMP_NUM_THREADS); unset: torch's"
    )
    parser.add_argument("--log", help="write the server's log here")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between job polls")
    args = parser.parse_args(argv)
    port = 8765
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        env = dict(os.environ, STUDIO_DATA_DIR=data_dir, STUDIO_PORT=str(port))
        env.pop("STUDIO_REDIS_URL", None)
        env.pop("STUDIO_DATABASE_URL", None)
        if args.threads:
            env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        log = open(args.log, "w") if args.log else subprocess.DEVNULL  # noqa: SIM115
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], cwd=ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT,
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
            started, upload_at = time.monotonic(), time.time()
            created = client.post("/api/concepts", data=form, files=files)
            created.raise_for_status()
            fit = _wait(client, created.json()["job"]["id"], args.poll)
            ready_s = time.monotonic() - started
            body = {"prompt": "a <candy> on a blue background", "n": 1}
            generation = client.post("/api/generations", json=body)
            generation.raise_for_status()
            image = _wait(client, generation.json()["job"]["id"], args.poll)
            total_s = time.monotonic() - started
        finally:
            server.terminate()
            server.wait(timeout=30)
            if log is not subprocess.DEVNULL:
                log.close()
    threads = args.threads or "torch's default"
    print(f"Upload {args.after_start:.0f} s after the server answered (warm start: see --help);")
    print(f"server torch threads: {threads}; the client polls each job every {args.poll} s.")
    print()
    print("| step | state | seconds from upload |")
    print("|---|---|---|")
    print(f"| concept ready (fit + 2 samples) | {fit['state']} | {ready_s:.1f} |")
    print(f"| first generated image (25 steps) | {image['state']} | {total_s:.1f} |")
    print()
    print("| phase (job rows' timestamps) | seconds from upload |")
    print("|---|---|")
    for name, at in phases(fit, image, upload_at):
        print(f"| {name} | {'-' if at is None else f'{at:.2f}'} |")
    return 0 if fit["state"] == image["state"] == "succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
