"""Shared fixtures: an isolated embedded configuration per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import get_settings
from app.db import get_engine, get_sessionmaker
from app.jobs.progress import get_progress_bus
from app.readcache import read_cache
from app.security.ratelimit import counter_for


def reset_caches() -> None:
    """Forget cached settings, engine and bus so new environment variables take effect."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    for cached in (get_settings, get_engine, get_sessionmaker, get_progress_bus, counter_for):
        cached.cache_clear()
    read_cache.clear()


@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Embedded settings (SQLite in tmp_path, in-memory broker), schema migrated."""
    for name in ("STUDIO_DATABASE_URL", "STUDIO_REDIS_URL", "STUDIO_ENV", "STUDIO_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "var"))
    # No base model loading behind in-process tests' backs (tests/unit/test_warm_start.py).
    monkeypatch.setenv("STUDIO_WORKER_WARM_START", "0")
    reset_caches()
    from app.migrate import upgrade

    upgrade()
    yield tmp_path / "var"
    reset_caches()


@pytest.fixture
def client(embedded_env: Path) -> Iterator[object]:
    """A TestClient of the app on embedded settings, with its in-process worker running."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app()) as test_client:
        yield test_client
