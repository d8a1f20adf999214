"""API tests run against PostgreSQL: one fresh database per test module, no worker running.

The app is driven through TestClient without entering its lifespan, so jobs stay rows in
the database (nothing consumes the in-memory broker): these tests check what the web side
writes, and set up worker results (ready concepts, images) as rows where they need them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import reset_caches
from tests.support.services import fresh_postgres_database

ORIGIN = "http://127.0.0.1:8000"
_names = itertools.count()


@pytest.fixture(scope="module")
def pg_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    with fresh_postgres_database() as url, pytest.MonkeyPatch.context() as mp:
        for name in ("STUDIO_REDIS_URL", "STUDIO_ENV", "STUDIO_SECRET_KEY", "STUDIO_PUBLIC_URL"):
            mp.delenv(name, raising=False)
        mp.setenv("STUDIO_DATABASE_URL", url)
        mp.setenv("STUDIO_DATA_DIR", str(tmp_path_factory.mktemp("var")))
        reset_caches()
        from app.main import create_app
        from app.migrate import upgrade

        upgrade(url)
        yield create_app()
        reset_caches()


@pytest.fixture
def anon(pg_app: FastAPI) -> TestClient:
    return TestClient(pg_app, base_url=ORIGIN, headers={"Origin": ORIGIN})


@pytest.fixture
def make_user(pg_app: FastAPI) -> Callable[..., TestClient]:
    """A new signed-in client (its own cookie jar) per call."""

    def make(name: str | None = None, password: str = "correct horse") -> TestClient:
        client = TestClient(pg_app, base_url=ORIGIN, headers={"Origin": ORIGIN})
        username = name or f"user{next(_names)}_{id(client) % 10000}"
        response = client.post(
            "/api/auth/signup", json={"username": username, "password": password}
        )
        assert response.status_code == 201, response.text
        client.username = username  # type: ignore[attr-defined]
        return client

    return make
