"""The web tier under `wrk` (a C load generator, not competing for the server's Python).

    python -m bench.wrk_web [--connections 50] [--duration 15]

Starts the same server and data as bench.web_load (production mode, PostgreSQL + Redis, no
worker, public imported concepts), then runs `wrk -t1 -c50` for each URL: a static CSS file, the
browse page (HTML, signed out and signed in), a concept page (HTML) and the
public list (JSON). During the signed-in browse page's run it also times progress events
(published to a queued job's Redis stream as a worker does) until a websocket delivers them,
from this process, which wrk leaves nearly idle. Needs `wrk` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import threading
from pathlib import Path

from bench.common import machine_header, table
from bench.web_load import (
    LoadResult,
    Server,
    percentile,
    progress_latency,
    setup_data,
    web_processes,
)

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
PERCENTILES = Path(__file__).with_name("wrk_percentiles.lua")


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * UNITS[unit]


def wrk(url: str, connections: int, duration: int, headers: dict[str, str]) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    args += ["-s", str(PERCENTILES)]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", out, re.M))
    if len(latency) < 3:
        raise RuntimeError(f"unexpected wrk output for {url}:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(latency["50"]),
        "p90": _ms(latency["90"]),
        "p95": int(re.search(r"^p95_us (\d+)$", out, re.M).group(1)) / 1000,  # type: ignore[union-attr]
        "p99": _ms(latency["99"]),
        "errors": float(errors.group(1) if errors else 0)
        + (sum(int(g) for g in socket.groups()) if socket else 0),
    }


def wrk_with_progress(
    url: str, connections: int, duration: int, headers: dict[str, str], token: str, concept: dict
) -> tuple[dict[str, float], LoadResult]:
    """`wrk` on `url`, and progress latency sampled on a websocket while it runs."""
    answer: dict[str, dict[str, float]] = {}
    load = threading.Thread(
        target=lambda: answer.setdefault("r", wrk(url, connections, duration, headers))
    )
    load.start()
    progress = LoadResult(connections, duration)
    base = url.split("/", 3)[:3]
    try:
        asyncio.run(progress_latency("/".join(base), token, concept, 40, progress))
    except Exception as exc:  # noqa: BLE001 - a failure here is a finding, not a crash
        progress.progress_error = f"{exc.__class__.__name__}: {exc}"[:200]
    load.join()
    return answer["r"], progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before measuring")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    header = machine_header()
    with Server() as server:
        tokens, concepts = setup_data(server.url)
        import httpx

        page = httpx.get(server.url + "/signin").text
        css = re.search(r'href="(/static/[^"]*app\.css)"', page).group(1)  # type: ignore[union-attr]
        signed_in = {"Authorization": f"Bearer {tokens[0]}"}
        targets = [
            ("static CSS", css, {}),
            ("browse page, signed out", "/", {}),
            ("browse page, signed in", "/", signed_in),
            ("concept page", f"/concepts/{concepts[0]['id']}", signed_in),
            ("public list (JSON)", "/api/concepts/public", signed_in),
        ]
        etag = httpx.get(server.url + "/", headers=signed_in).headers.get("etag")
        if etag:  # a browser revalidating its copy: 304 while nothing it can see changed
            revalidate = {**signed_in, "If-None-Match": etag}
            targets.append(("browse page, signed in, If-None-Match (304)", "/", revalidate))
        rows = []
        progress: LoadResult | None = None
        for label, path, headers in targets:
            # Steady state, not start-up: each process's first answers compile templates,
            # open database connections and fill its read cache.
            wrk(server.url + path, args.connections, args.warmup, headers)
            if label == "browse page, signed in":
                r, progress = wrk_with_progress(
                    server.url + path, args.connections, args.duration, headers,
                    tokens[0], concepts[0],
                )  # fmt: skip
            else:
                r = wrk(server.url + path, args.connections, args.duration, headers)
            rows.append(
                [label, f"{r['rps']:.0f}", f"{r['p50']:.0f}", f"{r['p90']:.0f}",
                 f"{r['p95']:.0f}", f"{r['p99']:.0f}", int(r["errors"])]
            )  # fmt: skip
    print(header + "\n")
    print(
        table(["URL", "req/s", "p50 (ms)", "p90 (ms)", "p95 (ms)", "p99 (ms)", "errors"], rows)
        + f"\n\n`wrk -t1 -c{args.connections} -d{args.duration}s` per URL after {args.warmup} s "
        f"of the same load, {web_processes()} "
        "(PostgreSQL + Redis), 12 public concepts."
    )
    if progress is not None:
        ms = progress.progress_ms
        if ms:
            print(
                f"\nProgress latency during the signed-in browse load: p50 "
                f"{percentile(ms, 50):.1f} ms, p95 {percentile(ms, 95):.1f} ms over {len(ms)} "
                f"events, {progress.progress_lost} lost. {progress.progress_error}".rstrip()
            )
        else:
            print(f"\nProgress latency: no events arrived ({progress.progress_error or 'none'}).")


if __name__ == "__main__":
    main()
