"""Submitting jobs: create the row, send its message once the row is committed, queue order."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.jobs.estimates import estimated_wait
from app.jobs.events import StateEvent
from app.jobs.models import Job, JobKind, JobState
from app.jobs.params import JobParams
from app.jobs.progress import get_progress_bus
from app.jobs.schemas import JobRef
from app.orm import utcnow

log = logging.getLogger(__name__)


def create_job(
    session: Session,
    params: JobParams,
    *,
    owner_id: uuid.UUID | None = None,
    concept_id: uuid.UUID | None = None,
    generation_id: uuid.UUID | None = None,
    callback_url: str | None = None,
) -> Job:
    """Add a queued job of `params.kind` to the session; it is enqueued once committed.
    `callback_url` (already checked, `app.webhooks.urls`) is told when the job ends."""
    job = Job(
        kind=params.kind,
        state=JobState.queued,
        owner_id=owner_id,
        concept_id=concept_id,
        generation_id=generation_id,
        params=params.model_dump(mode="json"),
        max_attempts=get_settings().job_max_attempts,
        enqueued_at=utcnow(),
        callback_url=callback_url,
    )
    session.add(job)
    session.flush()
    enqueue_after_commit(session, job.id, params.kind)
    return job


def enqueue_after_commit(session: Session, job_id: uuid.UUID, kind: JobKind) -> None:
    """Send the job's message only when the transaction that created it has committed.

    A worker that received the message earlier could not see the row yet; a rolled-back
    transaction must not leave a message behind.
    """

    @event.listens_for(session, "after_commit", once=True)
    def _send(_session: Session) -> None:
        send_job_message(job_id, kind)


def send_job_message(job_id: uuid.UUID, kind: JobKind) -> None:
    """Publish the Celery message for a job, by task name (also used by the sweeper)."""
    from app.jobs.broker import TASK_FOR_KIND, celery_app  # Celery loads only when sending

    task_name, queue = TASK_FOR_KIND[kind]
    try:
        celery_app.send_task(task_name, args=[str(job_id)], queue=queue)
    except Exception:  # the sweeper re-enqueues queued jobs whose message was lost
        log.exception("could not enqueue job %s; the sweeper will retry", job_id)
        return
    get_progress_bus().publish(str(job_id), StateEvent(state=JobState.queued.value))


def get_job(session: Session, job_id: uuid.UUID) -> Job | None:
    return session.get(Job, job_id)


def queue_position(session: Session, job: Job) -> int | None:
    """1-based position among queued jobs of the same kind, or None when not queued."""
    if job.state != JobState.queued:
        return None
    ahead = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.kind == job.kind, Job.state == JobState.queued, Job.created_at < job.created_at)
    )
    return int(ahead or 0) + 1


def job_ref(session: Session, job: Job) -> JobRef:
    wait = estimated_wait(session, job)
    return JobRef(
        id=job.id,
        state=job.state.value,
        queue_position=queue_position(session, job),
        error=job.error,
        wait_s=wait.seconds if wait else None,
        behind_fit=bool(wait and wait.behind_fit),
    )
