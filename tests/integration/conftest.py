"""Integration fixtures: a fresh PostgreSQL database and the test Redis database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import fresh_postgres_database, fresh_redis


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def redis_url() -> Iterator[str]:
    with fresh_redis() as url:
        yield url
