"""Reaching the real services tests need, failing loudly when REQUIRE_SERVICES=1."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_TEST_DB = int(os.environ.get("TEST_REDIS_DB", "11"))


def services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES") == "1"


def missing(what: str, how: str) -> None:
    """Fail (REQUIRE_SERVICES=1, as in CI) or skip, saying what to start."""
    message = f"{what} is not reachable. Start it: {how}"
    if services_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_postgres() -> str:
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(POSTGRES_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001
        missing(
            f"PostgreSQL at {POSTGRES_ADMIN_URL} ({exc.__class__.__name__})",
            "`service postgresql start` (or set TEST_POSTGRES_URL)",
        )
    return POSTGRES_ADMIN_URL


def require_redis() -> str:
    import redis

    url = f"{REDIS_URL}/{REDIS_TEST_DB}"
    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        missing(
            f"Redis at {url} ({exc.__class__.__name__})",
            "`service redis-server start` (or set TEST_REDIS_URL)",
        )
    return url


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test module; dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin_url = require_postgres()
    name = f"studio_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def fresh_redis() -> Iterator[str]:
    """The test Redis database, emptied before and after use."""
    import redis

    url = require_redis()
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


CHROMIUM_PATH = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def require_chromium() -> str:
    """The system Chromium for Playwright (never `playwright install`)."""
    if not os.path.exists(CHROMIUM_PATH):
        missing(f"Chromium at {CHROMIUM_PATH}", "install the distribution's chromium package")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("The playwright Python package", "pip install playwright (not the browsers)")
    return CHROMIUM_PATH
