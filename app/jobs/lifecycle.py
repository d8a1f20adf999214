"""A job's final states: the one place they are written, each announced once committed.

Whoever ends a job (the runner, the sweeper, a cancel) calls `finish_job` in its own
transaction; the state event follows the commit, so no event announces a state that was
rolled back, and no caller publishes one by hand.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.concepts.status import fit_ended
from app.jobs.events import StateEvent
from app.jobs.models import Job, JobKind, JobState
from app.jobs.progress import get_progress_bus
from app.orm import utcnow
from app.storage.models import Blob
from app.webhooks.service import record_delivery

log = logging.getLogger(__name__)

CANCELING = "canceling"
"""StateEvent.state published when a running job was asked to stop (not a JobState)."""


def time_limit_message(limit_s: float) -> str:
    return (
        f"The job took longer than its time limit ({limit_s / 60:.0f} minutes) and was stopped. "
        "Try fewer steps or images."
    )


def out_of_attempts_message(job: Job) -> str:
    """Why a job that used up its attempts failed: its workers died, or it never started."""
    if job.state == JobState.running:
        return (
            f"The worker running this job stopped unexpectedly {job.attempts} times; "
            "it was not retried again."
        )
    return f"This job could not be started after {job.attempts} attempts."


def publish_after_commit(session: Session, job_id: uuid.UUID, event_: BaseModel) -> None:
    """Publish a progress event once the state it announces is committed."""

    @event.listens_for(session, "after_commit", once=True)
    def _publish(_session: Session) -> None:
        try:
            get_progress_bus().publish(str(job_id), event_)
        except Exception:  # events are hints; the row is already right
            log.warning("could not publish an event for job %s", job_id, exc_info=True)


def finish_job(
    session: Session,
    job: Job,
    state: JobState,
    *,
    error: str | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    """Move a job to a final state with its side effects, in the caller's transaction.

    Drops the job's checkpoint, moves a fit's concept on (`app.concepts.status`), records
    the webhook of a job with a callback URL (`app.webhooks`, sent after the commit), and
    publishes the state event after the commit.
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
    if job.kind == JobKind.fit and job.concept_id is not None:
        fit_ended(session, job.concept_id, state)
    record_delivery(session, job)
    publish_after_commit(session, job.id, StateEvent(state=state.value, error=error))


def fail_out_of_attempts(session: Session, job: Job) -> str:
    """Fail a job that used up its attempts; returns the message it failed with."""
    message = out_of_attempts_message(job)
    finish_job(session, job, JobState.failed, error=message)
    return message


def request_cancel(session: Session, job: Job) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next step."""
    session.refresh(job, with_for_update=True)  # a worker may be claiming it right now
    if job.state == JobState.queued:
        job.cancel_requested = True
        finish_job(session, job, JobState.canceled)
    elif job.state == JobState.running and not job.cancel_requested:
        job.cancel_requested = True
        publish_after_commit(session, job.id, StateEvent(state=CANCELING, attempt=job.attempts))
    return job
