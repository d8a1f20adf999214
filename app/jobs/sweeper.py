"""The sweeper: finds jobs whose message or worker was lost and sets them going again.

Every worker process runs one on a small daemon thread (started on Celery's worker_ready),
rather than Celery beat: beat must be a single process cluster-wide, while sweeps are
idempotent (row locks with SKIP LOCKED, conditional updates), so any number of workers
can sweep and the sweep survives whichever worker dies. The embedded web process also
sweeps once at start-up, when every `running` job is known to be orphaned.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import database_fault, session_scope
from app.jobs.lifecycle import fail_out_of_attempts, finish_job
from app.jobs.models import Job, JobKind, JobState
from app.jobs.queue import send_job_message
from app.orm import utcnow

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    requeued: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    canceled: list[uuid.UUID] = field(default_factory=list)


def _fail(session: Session, job: Job, report: SweepReport) -> None:
    fail_out_of_attempts(session, job)
    report.failed.append(job.id)


BROKER_MARK = "studio:broker-mark"
"""A key the sweeper keeps in the broker's Redis: when it is gone, so are the messages."""


@lru_cache
def _broker_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def broker_lost_messages() -> bool:
    """True (to one sweeper, once) after the broker lost its data: a Redis restarted without
    persistence, flushed, or failed over to an empty replica. Its queued messages are gone,
    so every queued job needs a new one now, not after `job_requeue_after_s`."""
    settings = get_settings()
    if settings.embedded:
        return False
    try:
        return bool(_broker_client(settings.redis_url).set(BROKER_MARK, "1", nx=True))
    except Exception:  # the broker is down: nothing can be sent now anyway
        log.warning("could not reach the broker to check for lost messages", exc_info=True)
        return False


def forget_broker_mark() -> None:
    """Undo `broker_lost_messages` when the sweep that saw the loss could not commit."""
    try:
        _broker_client(get_settings().redis_url).delete(BROKER_MARK)
    except Exception:  # the broker is down again: it will have lost the mark too
        log.warning("could not clear the broker mark", exc_info=True)


def sweep(
    now: datetime | None = None, *, orphaned_running: bool = False, judge_heartbeats: bool = True
) -> SweepReport:
    """One pass. `orphaned_running`: no worker can be running anything (embedded start-up).
    `judge_heartbeats=False`: leave running jobs alone (just after a database outage, when
    no worker could write a heartbeat, so every one looks stale)."""
    settings = get_settings()
    now = now or utcnow()
    stale = now - timedelta(seconds=settings.job_stale_after_s)
    requeue_before = now - timedelta(seconds=settings.job_requeue_after_s)
    report = SweepReport()
    to_send: list[tuple[uuid.UUID, JobKind]] = []
    marked = False
    try:
        with session_scope() as session:
            dead = or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale)
            running = select(Job).where(Job.state == JobState.running)
            if not orphaned_running:
                running = running.where(dead)
            if not judge_heartbeats:
                running = running.where(false())
            for job in session.scalars(running.with_for_update(skip_locked=True)):
                if job.cancel_requested:  # its worker died before it could stop
                    finish_job(session, job, JobState.canceled)
                    report.canceled.append(job.id)
                elif job.attempts >= job.max_attempts:
                    _fail(session, job, report)
                elif orphaned_running:
                    # Nothing runs it: queue it again; the claim counts the next attempt.
                    job.state, job.worker_id, job.enqueued_at = JobState.queued, None, now
                    to_send.append((job.id, job.kind))
                elif job.enqueued_at is None or job.enqueued_at < stale:
                    # A new message; the redelivered old one would come only after the visibility
                    # timeout. The claim takes over jobs whose heartbeat is stale.
                    job.enqueued_at = now
                    to_send.append((job.id, job.kind))
            queued = select(Job).where(Job.state == JobState.queued)
            marked = not orphaned_running and broker_lost_messages()
            lost = orphaned_running or marked
            if lost and not orphaned_running:
                log.warning("the broker lost its messages; every queued job is sent again")
            if not lost:  # the in-memory broker of a restarted process lost them all
                queued = queued.where(
                    or_(Job.enqueued_at.is_(None), Job.enqueued_at < requeue_before)
                )
            for job in session.scalars(queued.with_for_update(skip_locked=True)):
                if any(job.id == job_id for job_id, _ in to_send):  # just requeued above
                    continue
                if job.attempts >= job.max_attempts:
                    _fail(session, job, report)
                else:
                    job.enqueued_at = now
                    to_send.append((job.id, job.kind))
    except Exception:
        if marked:  # the loss was seen but nothing was re-sent: the next sweep must see it too
            forget_broker_mark()
        raise
    for job_id, kind in to_send:  # after commit, as everywhere
        send_job_message(job_id, kind)
        report.requeued.append(job_id)
    if report.requeued or report.failed or report.canceled:
        log.info(
            "sweep: requeued %d, failed %d, canceled %d",
            len(report.requeued),
            len(report.failed),
            len(report.canceled),
        )
    return report


class Sweeper(threading.Thread):
    """Sweeps at start and then every `sweep_interval_s` (jittered: workers do not align)."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="job-sweeper")
        self.stopped = threading.Event()

    def run(self) -> None:
        settings = get_settings()
        interval = settings.sweep_interval_s
        database_failed_at = -float("inf")
        while True:  # first sweep at once: a worker starting after a crash recovers its jobs
            # After the database was away, give every worker a stale period to heartbeat
            # again before taking its job for dead.
            judge = time.monotonic() - database_failed_at > settings.job_stale_after_s
            try:
                sweep(judge_heartbeats=judge)
            except Exception as exc:
                if database_fault(exc) is not None:
                    database_failed_at = time.monotonic()
                log.warning("sweep failed; will try again", exc_info=True)
            if self.stopped.wait(interval * random.uniform(0.8, 1.2)):
                return

    def stop(self) -> None:
        self.stopped.set()


_sweeper: Sweeper | None = None
_lock = threading.Lock()


def start_sweeper() -> Sweeper:
    """Start this process's sweeper thread (once)."""
    global _sweeper
    with _lock:
        if _sweeper is None or not _sweeper.is_alive():
            _sweeper = Sweeper()
            _sweeper.start()
        return _sweeper


def stop_sweeper() -> None:
    global _sweeper
    with _lock:
        if _sweeper is not None:
            _sweeper.stop()
            _sweeper = None
