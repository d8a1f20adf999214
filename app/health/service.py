"""Health checks of the database, the broker and the workers."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import get_sessionmaker
from app.jobs.models import Job, JobState
from app.jobs.params import PingParams
from app.jobs.queue import create_job


def check_database(session: Session) -> dict[str, Any]:
    try:
        session.execute(text("SELECT 1"))
        return {"ok": True, "dialect": session.get_bind().dialect.name}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def check_broker(settings: Settings) -> dict[str, Any]:
    if settings.embedded:
        return {"ok": True, "transport": "memory"}
    try:
        import redis

        redis.Redis.from_url(settings.redis_url, socket_timeout=2).ping()
        return {"ok": True, "transport": "redis"}
    except Exception as exc:
        return {"ok": False, "transport": "redis", "error": f"{type(exc).__name__}: {exc}"}


def check_workers(settings: Settings) -> dict[str, Any]:
    if settings.embedded:
        from app.jobs.embedded import embedded_worker

        worker = embedded_worker()
        alive = worker is not None and worker.alive
        return {"ok": alive, "workers": 1 if alive else 0, "mode": "in-process"}
    try:
        from app.jobs.broker import celery_app

        replies = celery_app.control.ping(timeout=1.0)
        names = sorted(name for reply in replies for name in reply)
        return {"ok": bool(names), "workers": len(names), "names": names}
    except Exception as exc:
        return {"ok": False, "workers": 0, "error": f"{type(exc).__name__}: {exc}"}


def roundtrip(timeout_s: float = 10.0) -> dict[str, Any]:
    """Submit a ping job and wait for a worker to finish it: the whole path, end to end."""
    started = time.monotonic()
    maker = get_sessionmaker()
    with maker() as session:
        job_id: uuid.UUID = create_job(session, PingParams()).id
        session.commit()
    while time.monotonic() - started < timeout_s:
        with maker() as session:
            job = session.get(Job, job_id)
            if job is not None and job.state.finished:
                ok = job.state == JobState.succeeded
                return {
                    "ok": ok,
                    "job_id": str(job_id),
                    "state": job.state.value,
                    "latency_s": round(time.monotonic() - started, 3),
                    "result": job.result,
                }
        time.sleep(0.05)
    return {"ok": False, "job_id": str(job_id), "error": f"no worker finished it in {timeout_s}s"}
