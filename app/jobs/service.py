"""Job lifecycle on the web side: create, enqueue after commit, cancel, finish, queue position."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from app.concepts.models import Concept, ConceptStatus
from app.config import get_settings
from app.db import utcnow
from app.jobs.events import StateEvent
from app.jobs.models import Job, JobKind, JobState
from app.jobs.progress import get_progress_bus
from app.storage.models import Blob

log = logging.getLogger(__name__)

CANCELING = "canceling"
"""StateEvent.state published when a running job was asked to stop (not a JobState)."""


def create_job(
    session: Session,
    kind: JobKind,
    *,
    owner_id: uuid.UUID | None = None,
    concept_id: uuid.UUID | None = None,
    generation_id: uuid.UUID | None = None,
    params: dict[str, Any] | None = None,
) -> Job:
    """Add a queued job to the session and arrange for it to be enqueued once committed."""
    job = Job(
        kind=kind,
        state=JobState.queued,
        owner_id=owner_id,
        concept_id=concept_id,
        generation_id=generation_id,
        params=params or {},
        max_attempts=get_settings().job_max_attempts,
        enqueued_at=utcnow(),
    )
    session.add(job)
    session.flush()
    enqueue_after_commit(session, job.id, kind)
    return job


def enqueue_after_commit(session: Session, job_id: uuid.UUID, kind: JobKind) -> None:
    """Send the job's message only when the transaction that created it has committed.

    A worker that received the message earlier could not see the row yet; a rolled-back
    transaction must not leave a message behind.
    """

    @event.listens_for(session, "after_commit", once=True)
    def _send(_session: Session) -> None:
        send_job_message(job_id, kind)


def publish_after_commit(session: Session, job_id: uuid.UUID, event_: BaseModel) -> None:
    """Publish a progress event once the state it announces is committed."""

    @event.listens_for(session, "after_commit", once=True)
    def _publish(_session: Session) -> None:
        try:
            get_progress_bus().publish(str(job_id), event_)
        except Exception:  # events are hints; the row is already right
            log.warning("could not publish an event for job %s", job_id, exc_info=True)


def send_job_message(job_id: uuid.UUID, kind: JobKind) -> None:
    """Publish the Celery message for a job (also used by the sweeper to re-enqueue)."""
    from workers.celery_app import TASK_FOR_KIND, celery_app

    task_name, queue = TASK_FOR_KIND[kind.value]
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


def finish_job(
    session: Session,
    job: Job,
    state: JobState,
    *,
    error: str | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    """Move a job to a final state with its side effects, in the caller's transaction.

    The one place final states are written (runner, sweeper, cancel), so a fit's concept
    never stays `fitting` after its job ended, whoever ended it.
    """
    assert state.finished
    job.state = state
    job.error = error
    if result is not None:
        job.result = result
    if state == JobState.succeeded:
        job.progress = 1.0
    job.finished_at = utcnow()
    if job.checkpoint_blob_id is not None:  # only a retry of this job could use it
        checkpoint = session.get(Blob, job.checkpoint_blob_id)
        job.checkpoint_blob_id = None
        if checkpoint is not None:
            session.delete(checkpoint)
    if job.kind == JobKind.fit and job.concept_id is not None and state != JobState.succeeded:
        concept = session.get(Concept, job.concept_id)
        if concept is not None and concept.status == ConceptStatus.fitting:
            concept.status = ConceptStatus(state.value)


def request_cancel(session: Session, job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next step."""
    session.refresh(job, with_for_update=True)  # a worker may be claiming it right now
    if job.state == JobState.queued:
        job.cancel_requested = True
        finish_job(session, job, JobState.canceled)
        publish_after_commit(session, job.id, StateEvent(state=JobState.canceled.value))
    elif job.state == JobState.running and not job.cancel_requested:
        job.cancel_requested = True
        publish_after_commit(session, job.id, StateEvent(state=CANCELING, attempt=job.attempts))
    return job
