"""Where a browse request's time goes: cProfile and a query count, in process.

    python -m bench.profile_web [--requests 50] [--path /api/concepts/public] [--cold]

The app in production mode on a fresh PostgreSQL database and Redis (as bench.web_load), the
same seeded data (users with API tokens, public imported concepts). The profiled requests go
through httpx's ASGI transport on this thread, with anyio's worker threads run inline, so the
profile holds the whole request: middleware, auth, queries, rendering (Starlette's TestClient
runs the app on another thread, where cProfile saw only lock waits). `--cold` bumps the data
version before each request: every answer is computed (the read cache's misses), not reused.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import secrets
import time
from collections import Counter

from bench.web_load import CONCEPTS, POSTGRES_ADMIN_URL, REDIS_URL, USERS, concept_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--path", action="append", default=[])
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--cold", action="store_true", help="no read-cache hits")
    parser.add_argument("--sort", default="cumulative", help="pstats key, e.g. tottime")
    args = parser.parse_args()
    paths = args.path or ["/api/concepts/public", "/", "/concepts/{id}"]

    from sqlalchemy import create_engine, event, text

    name = f"bench_profile_{secrets.token_hex(4)}"
    import redis

    bench_redis = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    if bench_redis.dbsize():  # as bench.web_load's Server: its own Redis db, emptied after
        raise SystemExit(f"{REDIS_URL} is not empty: refusing to use (and flush) it")
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    os.environ.update(
        STUDIO_ENV="production", STUDIO_DATABASE_URL=url, STUDIO_REDIS_URL=REDIS_URL,
        STUDIO_SECRET_KEY=secrets.token_urlsafe(32), STUDIO_PUBLIC_URL="https://127.0.0.1:8000",
        STUDIO_FITS_PER_HOUR="100000", STUDIO_GENERATIONS_PER_HOUR="100000",
        STUDIO_AUTH_ATTEMPTS_PER_WINDOW="100000",
    )  # fmt: skip
    try:
        from fastapi.testclient import TestClient

        from app.db import get_engine
        from app.main import create_app
        from app.migrate import upgrade

        upgrade(url)
        app = create_app()
        origin = {"Origin": "https://127.0.0.1:8000"}
        client = TestClient(app, base_url="https://127.0.0.1:8000", headers=origin)
        tokens = []
        for k in range(USERS):
            creds = {"username": f"prof{k}", "password": "bench-password-1"}
            client.post("/api/auth/signup", json=creds).raise_for_status()
            tokens.append(client.post("/api/tokens", json={"name": "b"}).json()["token"])
            client.cookies.clear()
        concept_ids = []
        for k, data in enumerate(concept_files(CONCEPTS)):
            response = client.post(
                "/api/concepts/import",
                headers={"Authorization": f"Bearer {tokens[k % USERS]}"},
                files={"file": (f"c{k}.safetensors", data, "application/octet-stream")},
                data={"name": f"Bench concept {k}", "visibility": "public"},
            )
            response.raise_for_status()
            concept_ids.append(response.json()["id"])
        client.close()
        import anyio.to_thread
        import httpx

        from app.readcache import data_version

        async def inline(func, *args, **_kwargs):  # type: ignore[no-untyped-def]
            return func(*args)

        anyio.to_thread.run_sync = inline  # sync routes and dependencies on this thread
        loop = asyncio.new_event_loop()
        profiled = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://127.0.0.1:8000",
            headers={**origin, "Authorization": f"Bearer {tokens[0]}"},
        )  # fmt: skip

        def get(target: str) -> None:
            if args.cold:
                data_version().bump()
            loop.run_until_complete(profiled.get(target)).raise_for_status()

        queries: Counter[str] = Counter()

        @event.listens_for(get_engine(), "before_cursor_execute")
        def _count(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
            queries[current] += 1

        for path in paths:
            current = path
            target = path.format(id=concept_ids[0])
            get(target)  # warm
            queries[path] = 0
            profile = cProfile.Profile()
            started = time.perf_counter()
            profile.enable()
            for _ in range(args.requests):
                get(target)
            profile.disable()
            elapsed = (time.perf_counter() - started) / args.requests * 1000
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats(args.sort).print_stats(args.top)
            print(f"\n=== GET {path}: {elapsed:.1f} ms/request in process, "
                  f"{queries[path] / args.requests:.1f} queries/request"
                  f"{' (cold: read cache bumped each time)' if args.cold else ''} ===")  # fmt: skip
            print("\n".join(out.getvalue().splitlines()[: args.top + 12]))
    finally:
        bench_redis.flushdb()  # rate-limit counters, imports' sample jobs, the data version
        try:
            from app.db import get_engine

            get_engine().dispose()
        except Exception:  # noqa: BLE001
            pass
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
