"""Rate limits and job quotas: 429 with Retry-After, in memory (embedded) and on Redis."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi import HTTPException
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from app.config import Settings
from app.db import session_scope
from app.jobs import params as limits
from app.jobs.models import Job, JobKind, JobState
from app.security.ratelimit import (
    MemoryCounter,
    RedisCounter,
    enforce,
    enforce_auth_rate,
    enforce_job_quota,
)
from app.users.models import User
from tests.support.services import fresh_redis


def request_from(ip: str) -> Request:
    return Request(
        {"type": "http", "method": "POST", "path": "/", "headers": [], "client": (ip, 1234)}
    )


def refused(call) -> HTTPException:  # type: ignore[no-untyped-def]
    with pytest.raises(HTTPException) as exc:
        call()
    assert exc.value.status_code == 429
    assert exc.value.headers is not None and int(exc.value.headers["Retry-After"]) >= 1
    return exc.value


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_counters_limit_per_key_and_window(backend: str) -> None:
    if backend == "memory":
        counter: MemoryCounter | RedisCounter = MemoryCounter()
        check(counter)
    else:
        with fresh_redis() as url:
            check(RedisCounter(url))


def check(counter: MemoryCounter | RedisCounter) -> None:
    key = f"t:{uuid.uuid4().hex}"
    for _ in range(3):
        enforce(key, 3, 60, "slow down", counter)
    error = refused(lambda: enforce(key, 3, 60, "slow down", counter))
    assert error.detail == "slow down" and int(error.headers["Retry-After"]) <= 60  # type: ignore[index]
    enforce(key + "other", 3, 60, "slow down", counter)  # other keys are unaffected
    assert counter.hit(key, 60, now=10**9) == 1  # a new window starts afresh


def test_sign_in_is_limited_per_ip_and_username(embedded_env: Path) -> None:
    settings = Settings(auth_attempts_per_window=2)
    for _ in range(2):
        enforce_auth_rate(request_from("10.0.0.1"), "Alice", "login", settings)
    refused(lambda: enforce_auth_rate(request_from("10.0.0.1"), "alice ", "login", settings))
    enforce_auth_rate(request_from("10.0.0.2"), "alice", "login", settings)  # other IP
    enforce_auth_rate(request_from("10.0.0.1"), "bob", "login", settings)  # other user
    enforce_auth_rate(request_from("10.0.0.1"), "alice", "signup", settings)  # other action


def test_job_quota_caps_active_jobs_then_hourly_rate(embedded_env: Path) -> None:
    settings = Settings(max_active_jobs=2, fits_per_hour=3)
    with session_scope() as session:
        user = User(username=f"u{uuid.uuid4().hex[:8]}", password_hash="x")
        session.add(user)
        session.flush()
        enforce_job_quota(session, user, JobKind.fit, settings)
        for state in (JobState.queued, JobState.running, JobState.succeeded):
            session.add(Job(kind=JobKind.fit, state=state, owner_id=user.id))
        session.flush()
        error = refused(lambda: enforce_job_quota(session, user, JobKind.generate, settings))
        assert "2 jobs queued or running" in error.detail
        session.query(Job).filter(Job.state == JobState.running).update(
            {Job.state: JobState.failed}
        )
        enforce_job_quota(session, user, JobKind.fit, settings)  # 2nd fit this hour
        enforce_job_quota(session, user, JobKind.fit, settings)  # 3rd
        error = refused(lambda: enforce_job_quota(session, user, JobKind.fit, settings))
        assert "Hourly limit of 3 fit jobs" in error.detail
        enforce_job_quota(session, user, JobKind.generate, settings)  # its own budget


class GenerationForm(BaseModel):
    prompt: limits.Prompt
    negative_prompt: limits.NegativePrompt = ""
    steps: limits.Steps = 30
    n: limits.ImageCount = 1
    guidance: limits.Guidance = 7.5
    seed: limits.Seed = 0
    strength: limits.Strength = 0.8


@pytest.mark.parametrize(
    "bad",
    [
        {"prompt": ""},
        {"prompt": "x" * 501},
        {"negative_prompt": "x" * 501},
        {"steps": 0},
        {"steps": 101},
        {"n": 5},
        {"n": 0},
        {"guidance": 20.5},
        {"guidance": float("nan")},
        {"seed": -1},
        {"seed": 2**32},
        {"strength": 1.01},
    ],
)
def test_generation_bounds(bad: dict[str, object]) -> None:
    GenerationForm(
        prompt="x" * 500,
        negative_prompt="y" * 500,
        steps=100,
        n=4,
        guidance=20,
        seed=2**32 - 1,
        strength=1,
    )
    with pytest.raises(ValidationError):
        GenerationForm(**{"prompt": "a dog", **bad})  # type: ignore[arg-type]
