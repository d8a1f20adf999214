"""Web load test: 50 concurrent clients against the real app on loopback, plus progress latency.

    python -m bench.web_load [--clients 50] [--duration 20]

Starts `perfusion-studio serve` (one web process per core unless STUDIO_WEB_WORKERS says) in
production mode on 127.0.0.1 with a fresh PostgreSQL database and its own Redis database (broker
+ progress bus), and no worker: this measures the web tier, and submitted generations simply
queue. Quotas and the auth rate limit are raised for the run (it measures throughput, not
refusals). Setup signs up a few users, gives each an API token and imports public concepts
(synthetic but valid Perfusion files). Then for a bounded duration each client loops without
think time over: browse public concepts (JSON), open a concept page (HTML), read a concept
(JSON), submit a generation with the concept's token (weights 4:3:2:1). Reported: p50/p95/p99
latency, throughput and errors (non-2xx or transport failures) per kind and overall.

Progress latency: a client holds the websocket of one of its queued jobs, the benchmark
publishes an event to that job's Redis stream exactly as a worker does
(`app.jobs.progress.RedisProgressBus.publish`), and times its arrival; p50/p95 over samples.
The client runs on the same 2 shared cores as the server, so these are upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from bench.common import ROOT, machine_header, table, verdict

POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
WEIGHTS = {"browse": 4, "concept_page": 3, "concept_api": 2, "generate": 1}
USERS = 5
CONCEPTS = 12
GOAL_P95_MS = 500.0
# Requests refused because they followed the request that created their subject too quickly.
READ_AFTER_WRITE_401S: list[str] = []


@dataclass
class LoadResult:
    clients: int
    duration_s: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_examples: list[str] = field(default_factory=list)
    progress_ms: list[float] = field(default_factory=list)
    progress_lost: int = 0
    progress_error: str = ""


@lru_cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every client. httpx builds a new one per client by default, loading
    the CA bundle: ~180 ms of CPU each on the loaded 2-core machine, on the load generator's
    event loop. Fifty clients starting at once then held the loop ~9 s inside the measured
    window (every client finished about one request; the server sat idle). The server is
    plain HTTP on loopback, so the context is never used for a handshake; the clients also
    ignore the environment (trust_env=False: proxy variables, ~9 ms a client more)."""
    return ssl.create_default_context()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def web_processes() -> str:
    """How many web processes `serve` runs in the benchmarks' production environment."""
    import os

    set_to = os.environ.get("STUDIO_WEB_WORKERS")
    count = int(set_to) if set_to else len(os.sched_getaffinity(0))
    plural = "es" if count > 1 else ""
    return f"{count} web process{plural} (`serve`: one per core unless STUDIO_WEB_WORKERS)"


def concept_files(count: int) -> list[bytes]:
    """Valid Perfusion concept files for the toy-world layout (random values)."""
    import torch

    from bench.size import meta_unet, toy_config
    from workers.perfusion import Concept, concept_to_bytes
    from workers.perfusion.pipeline import cross_attention_layers

    config = toy_config(ROOT / "workers" / "toyworld" / "model")
    if config is None:  # the toy model's published shape
        config = (
            dict(
                sample_size=16, block_out_channels=(64, 128, 128), layers_per_block=1,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=128, attention_head_dim=8, norm_num_groups=32,
            ),
            128,
        )  # fmt: skip
    unet_config, dim = config
    layers = cross_attention_layers(meta_unet(unet_config))
    generator = torch.Generator().manual_seed(0)
    files = []
    for k in range(count):
        concept = Concept(
            token=f"<bench{k}>",
            superclass=random.Random(k).choice(["circle", "square", "star", "triangle"]),
            token_embedding=torch.randn(dim, generator=generator),
            i_star=torch.randn(dim, generator=generator),
            e_super=torch.randn(dim, generator=generator),
            o_k={},
            o_v={
                n: torch.randn(a.to_v.out_features, generator=generator) for n, a in layers.items()
            },
            score=torch.randn(dim, generator=generator),
            i_star_energy=1.0,
            base_fingerprint="b" * 64,
            covariance_fingerprint="c" * 64,
            base_model_id="toyworld",
        )
        files.append(concept_to_bytes(concept))
    return files


class Server:
    """The app under test in its own process; its database and Redis db are removed after."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.db_name = f"studio_bench_{uuid.uuid4().hex[:10]}"
        self.process: subprocess.Popen | None = None
        self.log = Path(f"/tmp/{self.db_name}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        from sqlalchemy.engine import make_url

        db_url = make_url(POSTGRES_ADMIN_URL).set(database=self.db_name)
        return dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            STUDIO_ENV="production",
            STUDIO_DATABASE_URL=db_url.render_as_string(hide_password=False),
            STUDIO_REDIS_URL=REDIS_URL,
            STUDIO_SECRET_KEY=uuid.uuid4().hex,
            STUDIO_DATA_DIR=f"/tmp/{self.db_name}",
            STUDIO_GENERATIONS_PER_HOUR="1000000",
            STUDIO_MAX_ACTIVE_JOBS="1000000",
            STUDIO_AUTH_ATTEMPTS_PER_WINDOW="1000",
            STUDIO_FITS_PER_HOUR="1000",
        )

    def __enter__(self) -> Server:
        import redis
        from sqlalchemy import create_engine, text

        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        if client.dbsize():
            raise RuntimeError(f"{REDIS_URL} is not empty: refusing to use (and flush) it")
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.db_name}"'))
        admin.dispose()
        env = self.env()
        python = sys.executable
        subprocess.run([python, "-m", "app.cli", "migrate"], cwd=ROOT, env=env, check=True,
                       capture_output=True)  # fmt: skip
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [python, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        import httpx

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log}")
            try:
                if httpx.get(self.url + "/api/concepts/superclasses", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server did not start in 60 s; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        import redis
        from sqlalchemy import create_engine, text

        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        redis.Redis.from_url(REDIS_URL).flushdb()
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        admin.dispose()


def setup_data(url: str) -> tuple[list[str], list[dict]]:
    """Users with API tokens, and public concepts imported from files: (tokens, concepts)."""
    import httpx

    tokens = []
    files = concept_files(CONCEPTS)
    concepts = []
    for k in range(USERS):
        with httpx.Client(base_url=url, timeout=30, verify=_tls(), trust_env=False) as client:
            creds = {"username": f"bench{k}-{uuid.uuid4().hex[:6]}", "password": "bench-password-1"}
            signup = client.post("/api/auth/signup", json=creds)
            signup.raise_for_status()
            # Production cookies are Secure, which httpx keeps off plain-http loopback: resend it.
            cookie = signup.headers["set-cookie"].split(";", 1)[0]
            for _ in range(20):
                response = client.post(
                    "/api/tokens", json={"name": "bench"}, headers={"Cookie": cookie}
                )
                if response.status_code != 401:
                    break
                # The signup's commit can land after its response: see READ_AFTER_WRITE_401S.
                READ_AFTER_WRITE_401S.append("signup → token")
                time.sleep(0.1)
            response.raise_for_status()
            tokens.append(response.json()["token"])
    with httpx.Client(base_url=url, timeout=30, verify=_tls(), trust_env=False) as client:
        for k, data in enumerate(files):
            response = client.post(
                "/api/concepts/import",
                headers={"Authorization": f"Bearer {tokens[k % USERS]}"},
                files={"file": (f"c{k}.safetensors", data, "application/octet-stream")},
                data={"name": f"Bench concept {k}", "visibility": "public"},
            )
            response.raise_for_status()
            concepts.append(response.json())
    return tokens, concepts


async def _client(
    url: str, tokens: list[str], concepts: list[dict], until: float, seed: int, result: LoadResult
) -> None:
    import httpx

    rng = random.Random(seed)
    kinds = list(WEIGHTS)
    weights = list(WEIGHTS.values())
    headers = {"Authorization": f"Bearer {tokens[seed % len(tokens)]}"}
    async with httpx.AsyncClient(
        base_url=url, timeout=30, headers=headers, verify=_tls(), trust_env=False
    ) as client:
        while time.monotonic() < until:
            kind = rng.choices(kinds, weights)[0]
            concept = rng.choice(concepts)
            started = time.perf_counter()
            try:
                if kind == "browse":
                    response = await client.get(
                        "/api/concepts/public", params={"page": rng.randint(1, 2)}
                    )
                elif kind == "concept_page":
                    response = await client.get(f"/concepts/{concept['id']}")
                elif kind == "concept_api":
                    response = await client.get(f"/api/concepts/{concept['id']}")
                else:
                    body = {
                        "prompt": f"a {concept['token']} on a black background",
                        "n": 1, "steps": 20, "seed": rng.randint(0, 1000),
                    }  # fmt: skip
                    response = await client.post("/api/generations", json=body)
                ok = 200 <= response.status_code < 300
                detail = f"{kind}: HTTP {response.status_code} {response.text[:120]}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{kind}: {exc.__class__.__name__} {exc}"
            result.latencies[kind].append((time.perf_counter() - started) * 1000)
            if not ok:
                result.errors[kind] += 1
                if len(result.error_examples) < 5:
                    result.error_examples.append(detail)


async def progress_latency(url: str, token: str, concept: dict, samples: int, result: LoadResult):
    """Publish to a queued job's stream as a worker does; time until the websocket delivers."""
    import httpx
    import websockets

    from app.jobs.progress import RedisProgressBus

    bus = RedisProgressBus(REDIS_URL)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=url, timeout=30, headers=headers, verify=_tls(), trust_env=False
    ) as client:
        body = {"prompt": f"a {concept['token']} on a white background", "n": 1, "steps": 20}
        response = await client.post("/api/generations", json=body)
        response.raise_for_status()
        job_id = response.json()["job"]["id"]
    ws_url = url.replace("http://", "ws://") + f"/ws/jobs/{job_id}"
    await asyncio.sleep(0.5)  # the job row's commit can land after the 202
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        await asyncio.sleep(0.5)  # let the replay and queue-position messages pass
        for k in range(samples):
            marker = f"bench-{k}"
            sent = time.perf_counter()
            await asyncio.to_thread(bus.publish, job_id, {"type": "log", "message": marker})
            try:
                while True:
                    message = await asyncio.wait_for(ws.recv(), timeout=5)
                    if marker in message:
                        result.progress_ms.append((time.perf_counter() - sent) * 1000)
                        break
            except TimeoutError:
                result.progress_lost += 1
            await asyncio.sleep(0.05)


async def _run(url: str, tokens, concepts, clients: int, duration: float, samples: int):
    result = LoadResult(clients, duration)
    until = time.monotonic() + duration
    tasks = [
        asyncio.create_task(_client(url, tokens, concepts, until, seed, result))
        for seed in range(clients)
    ]
    # Progress latency is sampled while the load runs, on its own websocket.
    try:
        await progress_latency(url, tokens[0], concepts[0], samples, result)
    except Exception as exc:  # noqa: BLE001 - a failure here is a finding, not a crash
        result.progress_error = f"{exc.__class__.__name__}: {exc}"[:200]
    await asyncio.gather(*tasks)
    return result


def run_load(clients: int = 50, duration: float = 20.0, samples: int = 40) -> LoadResult:
    with Server() as server:
        tokens, concepts = setup_data(server.url)
        return asyncio.run(_run(server.url, tokens, concepts, clients, duration, samples))


def render(result: LoadResult) -> str:
    rows = []
    every = [x for values in result.latencies.values() for x in values]
    for kind in [*WEIGHTS, "all"]:
        values = every if kind == "all" else result.latencies.get(kind, [])
        errors = sum(result.errors.values()) if kind == "all" else result.errors.get(kind, 0)
        rows.append(
            [
                kind, len(values), f"{len(values) / result.duration_s:.1f}",
                f"{percentile(values, 50):.0f}", f"{percentile(values, 95):.0f}",
                f"{percentile(values, 99):.0f}", errors,
            ]
        )  # fmt: skip
    headers = [
        "Request",
        "Count",
        "Throughput (req/s)",
        "p50 (ms)",
        "p95 (ms)",
        "p99 (ms)",
        "Errors",
    ]
    p95 = percentile(every, 95)
    errors = sum(result.errors.values())
    progress = result.progress_ms
    text = table(headers, rows) + "\n\n"
    text += (
        f"{result.clients} concurrent clients, {result.duration_s:.0f} s, no think time, against "
        f"{web_processes()} (PostgreSQL + Redis, no worker attached: generations queue). "
        f"Goal (ours; the brief set none): p95 ≤ {GOAL_P95_MS:.0f} ms and no errors — "
        f"{verdict(p95 <= GOAL_P95_MS and errors == 0)} (p95 {p95:.0f} ms, {errors} errors)."
    )
    if result.error_examples:
        text += " First errors: " + "; ".join(f"`{e}`" for e in result.error_examples) + "."
    if READ_AFTER_WRITE_401S:
        text += (
            f" Setup saw {len(READ_AFTER_WRITE_401S)} × 401 on a request sent right after the "
            "signup that created its user (the response is sent before the request's commit "
            "lands); it retried them."
        )
    text += (
        "\n\nProgress latency (worker publishes to Redis → websocket client receives), "
        f"measured during the load: p50 {percentile(progress, 50):.1f} ms, "
        f"p95 {percentile(progress, 95):.1f} ms over {len(progress)} events"
        f" ({result.progress_lost} lost)"
        + (f"; the probe failed: `{result.progress_error}`" if result.progress_error else "")
        + ".\n"
    )
    return text


def run_section(quick: bool = False) -> str:
    """The Markdown section for docs/benchmarks.md, or why it could not run."""
    try:
        import app.jobs.progress  # noqa: F401
    except ImportError as exc:
        return f"Not run: the web app is not in this checkout ({exc}).\n"
    parts = []
    # 50 clients is the goal; 20 shows how the app behaves below its concurrency cliff.
    for clients, duration in ((50, 10.0 if quick else 20.0), (20, 10.0)):
        try:
            result = run_load(clients=clients, duration=duration)
        except Exception as exc:  # noqa: BLE001 - report, don't fail the other benchmarks
            parts.append(f"{clients} clients: not run: {exc.__class__.__name__}: {exc}\n")
            continue
        parts.append(f"**{clients} concurrent clients**\n\n" + render(result))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Load-test the web app on loopback.")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args(argv)
    result = run_load(args.clients, args.duration, args.samples)
    print(machine_header())
    print()
    print(render(result))


if __name__ == "__main__":
    main()
