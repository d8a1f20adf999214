"""API shapes of jobs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.jobs.models import Job, JobKind, JobState
from app.webhooks.models import WebhookDelivery
from app.webhooks.schemas import WebhookOut


class JobRef(BaseModel):
    """A job as the resource it works for shows it (concepts, generations)."""

    id: uuid.UUID
    state: str
    queue_position: int | None = None
    error: str | None = None
    wait_s: float | None = None
    """While queued: an estimate of the seconds until a worker starts it."""
    behind_fit: bool = False
    """While queued: a fit is ahead of this generation."""


class JobOut(BaseModel):
    id: uuid.UUID
    kind: JobKind
    state: JobState
    progress: float
    """0..1, updated by the worker's heartbeat (live progress comes over the websocket)."""
    attempts: int
    max_attempts: int
    error: str | None
    cancel_requested: bool
    queue_position: int | None
    """1 = next to run; None unless queued."""
    concept_id: uuid.UUID | None
    generation_id: uuid.UUID | None
    result: dict[str, Any] | None
    created_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    callback_url: str | None = None
    webhook: WebhookOut | None = None
    """The webhook of a finished job with a callback URL: delivered, retrying, given up."""

    @classmethod
    def of(
        cls, job: Job, queue_position: int | None, webhook: WebhookDelivery | None = None
    ) -> JobOut:
        return cls(
            id=job.id,
            kind=job.kind,
            state=job.state,
            progress=job.progress,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            error=job.error,
            cancel_requested=job.cancel_requested,
            queue_position=queue_position,
            concept_id=job.concept_id,
            generation_id=job.generation_id,
            result=job.result,
            created_at=job.created_at,
            enqueued_at=job.enqueued_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
            callback_url=job.callback_url,
            webhook=WebhookOut.of(webhook) if webhook is not None else None,
        )
