"""The frame every task runs in: claim the job row, heartbeat, run, store once, publish.

A broker message is only a hint. The row decides: a worker claims a job atomically
(queued → running, or running with a stale heartbeat → running here), so a redelivered or
duplicated message does nothing, and a job whose worker died is picked up again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from celery.exceptions import SoftTimeLimitExceeded
from pydantic import BaseModel, ValidationError
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import database_fault, session_scope
from app.jobs.events import StateEvent
from app.jobs.lifecycle import fail_out_of_attempts, finish_job, time_limit_message
from app.jobs.models import Job, JobKind, JobState
from app.jobs.params import JobParams
from app.jobs.progress import get_progress_bus
from app.orm import utcnow

log = logging.getLogger(__name__)

DISK_FULL_MESSAGE = (
    "The server's storage filled up while saving this job's result, so nothing was saved. "
    "Your photos and earlier results are intact; please try again later."
)
_T = TypeVar("_T")


def with_database_retries(action: Callable[[], _T], what: str) -> _T:
    """`action()`, retried with backoff while the database is down or full (a restart, a
    failover, space being freed), for up to `job_store_retry_s`; then the last error."""
    deadline = time.monotonic() + get_settings().job_store_retry_s
    delay = 0.25
    while True:
        try:
            return action()
        except Exception as exc:
            fault = database_fault(exc)
            if fault is None or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: database %s; retrying in %.1fs", what, fault, delay)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


class JobCanceled(Exception):
    """Raised inside a handler when the job was asked to stop."""


class JobFailed(Exception):
    """A failure whose message is meant for the person who started the job."""


P = TypeVar("P", bound=JobParams)


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


@dataclass
class JobContext:
    """What a handler sees of its job."""

    job_id: uuid.UUID
    kind: JobKind
    params: dict[str, Any]
    """The row's JSON; handlers read it through `parse`."""
    attempt: int
    worker_id: str
    owner_id: uuid.UUID | None = None
    concept_id: uuid.UUID | None = None
    generation_id: uuid.UUID | None = None
    checkpoint_blob_id: uuid.UUID | None = None
    progress: float = 0.0
    """Fraction done; the heartbeat writes it to the row."""
    soft_deadline: float = float("inf")
    """time.monotonic() after which the job stops with a readable time-limit failure."""
    _canceled: bool = field(default=False, repr=False)
    _step_sent_at: float = field(default=float("-inf"), repr=False)
    _database_away: bool = field(default=False, repr=False)

    def parse(self, model: type[P]) -> P:
        """The job's parameters as `model`; a row that does not fit it fails the job."""
        try:
            return model.model_validate(self.params)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors()
            )
            raise JobFailed(f"This job's parameters are not valid: {problems}") from None

    def publish(self, event: BaseModel | dict[str, Any]) -> None:
        try:
            get_progress_bus().publish(str(self.job_id), event)
        except Exception:  # progress is a hint; never fail a job over it
            log.warning("could not publish progress for %s", self.job_id, exc_info=True)

    def publish_step(self, event: BaseModel, *, always: bool = False) -> None:
        """Publish a step event unless one went out less than `job_progress_interval_s`
        ago; `always` for the steps a watcher must see (first, last, with a preview)."""
        now = time.monotonic()
        if not always and now - self._step_sent_at < get_settings().job_progress_interval_s:
            return
        self._step_sent_at = now
        self.publish(event)

    def should_cancel(self) -> bool:
        """True once the job should stop: canceled, taken over, or past its time limit.

        Called between steps (a fit: at its progress points, about twice a second, or after
        every step when steps take longer); it reads the row every time (one indexed lookup,
        far cheaper than a step) so a cancel takes effect within about half a second or one
        step, whichever is longer.
        """
        if not self._canceled:
            try:
                try:
                    row = self._read_row()
                except Exception as exc:
                    if database_fault(exc) is None:
                        raise
                    row = self._read_row()  # a dropped connection is replaced: ask once more
            except Exception as exc:
                if database_fault(exc) is None:
                    raise
                # The database is away: keep the work in memory and go on; the result is
                # stored (only if the job is still ours) once it is back.
                if not self._database_away:
                    log.warning("job %s: database %s; fitting on", self.job_id, exc.__class__)
                self._database_away = True
                return time.monotonic() > self.soft_deadline
            self._database_away = False
            ours = row is not None and row.state == JobState.running
            ours = ours and row is not None and row.worker_id == self.worker_id
            self._canceled = not ours or bool(row and row.cancel_requested)
        return self._canceled or time.monotonic() > self.soft_deadline

    def _read_row(self) -> Any:
        with session_scope() as session:
            return session.execute(
                select(Job.cancel_requested, Job.state, Job.worker_id).where(Job.id == self.job_id)
            ).one_or_none()

    def raise_stop(self) -> NoReturn:
        """Raise why the job stopped (after a library reported that should_cancel was True)."""
        if self._canceled:
            raise JobCanceled
        raise JobFailed(time_limit_message(get_settings().job_time_limit_s))


@dataclass
class JobOutcome:
    """A handler's result: JSON for the job row and a function storing results in the DB.

    `store` runs in the same transaction that marks the job succeeded, and only if this
    worker still owns the job, so results are written exactly once.
    """

    result: dict[str, Any] = field(default_factory=dict)
    store: Callable[[Session], None] | None = None


Handler = Callable[[JobContext], JobOutcome]


def claim(job_id: uuid.UUID, worker_id: str) -> JobContext | None:
    """Atomically take the job for this worker, or None if it is not ours to run."""
    now = utcnow()
    stale = now - timedelta(seconds=get_settings().job_stale_after_s)
    with session_scope() as session:
        claimed = session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.cancel_requested.is_(False),
                Job.attempts < Job.max_attempts,
                or_(
                    Job.state == JobState.queued,
                    (Job.state == JobState.running) & (Job.heartbeat_at < stale),
                ),
            )
            .values(
                state=JobState.running,
                attempts=Job.attempts + 1,
                worker_id=worker_id,
                heartbeat_at=now,
                started_at=now,
                error=None,
            )
        ).rowcount
        if not claimed:
            _fail_if_out_of_attempts(session, job_id, stale)
            return None
        job = session.get(Job, job_id)
        assert job is not None
        return JobContext(
            job_id=job.id,
            kind=job.kind,
            params=dict(job.params),
            attempt=job.attempts,
            worker_id=worker_id,
            owner_id=job.owner_id,
            concept_id=job.concept_id,
            generation_id=job.generation_id,
            checkpoint_blob_id=job.checkpoint_blob_id,
        )


def _fail_if_out_of_attempts(session: Session, job_id: uuid.UUID, stale: Any) -> None:
    """A job whose worker died on its last attempt must not hang in `running` forever."""
    job = session.get(Job, job_id)
    if job is None or job.state.finished or job.attempts < job.max_attempts:
        return
    if job.state == JobState.running and job.heartbeat_at is not None and job.heartbeat_at > stale:
        return
    fail_out_of_attempts(session, job)


class _Heartbeat(threading.Thread):
    """Proves the job's worker alive (and records its progress) while the handler runs."""

    def __init__(self, ctx: JobContext) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{ctx.job_id}")
        self.ctx = ctx
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(get_settings().job_heartbeat_s):
            try:
                with session_scope() as session:
                    session.execute(
                        update(Job)
                        .where(
                            Job.id == self.ctx.job_id,
                            Job.state == JobState.running,
                            Job.worker_id == self.ctx.worker_id,
                        )
                        .values(heartbeat_at=utcnow(), progress=self.ctx.progress)
                    )
            except Exception:
                log.warning("heartbeat failed for %s", self.ctx.job_id, exc_info=True)


def _finish(
    ctx: JobContext,
    state: JobState,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    store: Callable[[Session], None] | None = None,
) -> None:
    """Move the job to a final state if this worker still owns it (its event follows)."""
    with session_scope() as session:
        job = session.scalar(
            select(Job)
            .where(
                Job.id == ctx.job_id,
                Job.state == JobState.running,
                Job.worker_id == ctx.worker_id,
            )
            .with_for_update()
        )
        if job is None:
            log.warning("job %s is no longer ours; dropping its result", ctx.job_id)
            return
        if store is not None:
            store(session)
        finish_job(session, job, state, error=error, result=result)


def _finish_retrying(ctx: JobContext, state: JobState, *, error: str | None = None) -> None:
    """`_finish`, waiting out a database restart or a full disk for `job_store_retry_s`."""
    with_database_retries(lambda: _finish(ctx, state, error=error), f"end {ctx.job_id}")


def run_job(job_id: str | uuid.UUID, handler: Handler) -> None:
    """Claim, run and finish one job; safe to call for any (re)delivered message."""
    job_uuid = uuid.UUID(str(job_id))
    worker_id = worker_identity()
    ctx = with_database_retries(lambda: claim(job_uuid, worker_id), f"claim {job_uuid}")
    if ctx is None:
        log.info("job %s not claimed (finished, canceled or running elsewhere)", job_uuid)
        return
    ctx.publish(StateEvent(state=JobState.running.value, attempt=ctx.attempt))
    limit_s = get_settings().job_time_limit_s
    ctx.soft_deadline = time.monotonic() + max(1.0, limit_s - 60)
    heartbeat = _Heartbeat(ctx)
    heartbeat.start()
    try:
        outcome = handler(ctx)
    except SoftTimeLimitExceeded:
        _finish_retrying(ctx, JobState.failed, error=time_limit_message(limit_s))
    except JobCanceled:
        _finish_retrying(ctx, JobState.canceled)
    except JobFailed as exc:
        _finish_retrying(ctx, JobState.failed, error=str(exc))
    except Exception as exc:
        log.exception("job %s failed", job_uuid)
        _finish_retrying(ctx, JobState.failed, error=f"{type(exc).__name__}: {exc}"[:2000])
    else:
        _store(ctx, outcome)
    finally:
        heartbeat.stopped.set()


def _store(ctx: JobContext, outcome: JobOutcome) -> None:
    """Store the result once, waiting out a database restart or a full disk for a while
    (the heartbeat goes on, so the job stays this worker's); a disk still full after that
    fails the job with a message people can read, and stores nothing. Each final state's
    event follows its commit (`finish_job`)."""

    def finish() -> None:
        _finish(ctx, JobState.succeeded, result=outcome.result, store=outcome.store)

    try:
        with_database_retries(finish, f"store the result of {ctx.job_id}")
    except Exception as exc:
        if database_fault(exc) != "disk_full":
            raise  # unreachable too long: the row stays running, the sweeper hands it on
        log.error("job %s: the database is full; the job fails", ctx.job_id)
        with_database_retries(
            lambda: _finish(ctx, JobState.failed, error=DISK_FULL_MESSAGE), f"fail {ctx.job_id}"
        )
