"""Rate limits (sign-in, sign-up, fits, generations) and the per-user cap on active jobs.

Fixed-window counters: Redis when `Settings.redis_url` is set (shared by every web process),
an in-process dictionary in embedded mode. Refusals are 429 with `Retry-After`.
"""

from __future__ import annotations

import math
import threading
import time
from functools import lru_cache
from typing import Literal, Protocol

from fastapi import HTTPException, Request, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.jobs.models import Job, JobKind, JobState
from app.users.models import User

ACTIVE_JOB_RETRY_AFTER_S = 30
"""A guess at when one of the person's active jobs will have finished."""


class Counter(Protocol):
    def hit(self, key: str, window_s: int, now: float, amount: int = 1) -> int:
        """Count `amount` events in the window containing `now`; return the window's count."""
        ...


class MemoryCounter:
    """Embedded mode: one process, so a locked dict is the whole truth."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (window index, count)

    def hit(self, key: str, window_s: int, now: float, amount: int = 1) -> int:
        window = int(now // window_s)
        with self._lock:
            if len(self._counts) > 100_000:  # forget finished windows; bounded memory
                self._counts = {k: v for k, v in self._counts.items() if v[0] >= window}
            seen, count = self._counts.get(key, (window, 0))
            count = (count if seen == window else 0) + amount
            self._counts[key] = (window, count)
            return count


class RedisCounter:
    """Production: INCR on a key per window, expiring with it, so every web process agrees."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2)

    def hit(self, key: str, window_s: int, now: float, amount: int = 1) -> int:
        window = int(now // window_s)
        name = f"studio:rl:{key}:{window}"
        pipe = self._redis.pipeline()
        pipe.incrby(name, amount)
        pipe.expire(name, window_s + 1)
        count, _ = pipe.execute()
        return int(count)


@lru_cache
def counter_for(redis_url: str) -> Counter:
    return RedisCounter(redis_url) if redis_url else MemoryCounter()


def get_counter(settings: Settings | None = None) -> Counter:
    return counter_for((settings or get_settings()).redis_url)


def too_many(message: str, retry_after_s: int) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS, message, headers={"Retry-After": str(retry_after_s)}
    )


def enforce(
    key: str, limit: int, window_s: int, message: str, counter: Counter, amount: int = 1
) -> None:
    """429 once `key` has been hit more than `limit` times in the current window."""
    now = time.time()
    if counter.hit(key, window_s, now, amount) > limit:
        retry = max(1, math.ceil(window_s - now % window_s))
        raise too_many(message, retry)


def client_ip(request: Request) -> str:
    """The peer address (behind a proxy, uvicorn's --proxy-headers sets it from the proxy)."""
    return request.client.host if request.client else "unknown"


def enforce_auth_rate(
    request: Request,
    username: str,
    action: Literal["login", "signup"],
    settings: Settings | None = None,
) -> None:
    """Call before checking a password or creating an account: per IP and username."""
    settings = settings or get_settings()
    key = f"{action}:{client_ip(request)}:{username.strip().lower()[:100]}"
    enforce(
        key,
        settings.auth_attempts_per_window,
        settings.auth_window_s,
        "Too many attempts; wait a little and try again.",
        get_counter(settings),
    )


def active_job_count(session: Session, user: User) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.owner_id == user.id, Job.state.in_((JobState.queued, JobState.running)))
        )
        or 0
    )


def _hourly(kind: JobKind, settings: Settings) -> tuple[str, int, str]:
    per_hour = settings.fits_per_hour if kind == JobKind.fit else settings.generations_per_hour
    return (
        f"job:{kind.value}:{{}}",
        per_hour,
        f"Hourly limit of {per_hour} {kind.value} jobs reached.",
    )


def check_job_quota(
    session: Session, user: User, kind: JobKind, settings: Settings | None = None, count: int = 1
) -> None:
    """Refuse (429) what the quota would refuse, counting nothing: call before reading an
    upload, then `count_jobs` once the request was accepted, so a refused upload costs none."""
    settings = settings or get_settings()
    if active_job_count(session, user) + count > settings.max_active_jobs:
        raise too_many(
            f"You already have {settings.max_active_jobs} jobs queued or running; "
            "wait for one to finish.",
            ACTIVE_JOB_RETRY_AFTER_S,
        )
    key, per_hour, message = _hourly(kind, settings)
    now = time.time()
    if get_counter(settings).hit(key.format(user.id), 3600, now, 0) + count > per_hour:
        raise too_many(message, max(1, math.ceil(3600 - now % 3600)))


def count_jobs(user: User, kind: JobKind, settings: Settings | None = None, count: int = 1) -> None:
    """Count `count` accepted jobs against the hourly rate (429 if that goes over it)."""
    settings = settings or get_settings()
    key, per_hour, message = _hourly(kind, settings)
    enforce(key.format(user.id), per_hour, 3600, message, get_counter(settings), count)


def enforce_job_quota(
    session: Session, user: User, kind: JobKind, settings: Settings | None = None, count: int = 1
) -> None:
    """Call before creating `count` fit or generation jobs: active-job cap, then hourly rate."""
    check_job_quota(session, user, kind, settings, count)
    count_jobs(user, kind, settings, count)
