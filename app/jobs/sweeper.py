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
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import session_scope
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


def sweep(now: datetime | None = None, *, orphaned_running: bool = False) -> SweepReport:
    """One pass. `orphaned_running`: no worker can be running anything (embedded start-up)."""
    settings = get_settings()
    now = now or utcnow()
    stale = now - timedelta(seconds=settings.job_stale_after_s)
    requeue_before = now - timedelta(seconds=settings.job_requeue_after_s)
    report = SweepReport()
    to_send: list[tuple[uuid.UUID, JobKind]] = []
    with session_scope() as session:
        dead = or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale)
        running = select(Job).where(Job.state == JobState.running)
        if not orphaned_running:
            running = running.where(dead)
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
        if not orphaned_running:  # the in-memory broker of a restarted process lost them all
            queued = queued.where(or_(Job.enqueued_at.is_(None), Job.enqueued_at < requeue_before))
        for job in session.scalars(queued.with_for_update(skip_locked=True)):
            if any(job.id == job_id for job_id, _ in to_send):  # just requeued above
                continue
            if job.attempts >= job.max_attempts:
                _fail(session, job, report)
            else:
                job.enqueued_at = now
                to_send.append((job.id, job.kind))
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
        interval = get_settings().sweep_interval_s
        while True:  # first sweep at once: a worker starting after a crash recovers its jobs
            try:
                sweep()
            except Exception:
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
