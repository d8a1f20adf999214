"""What a webhook says and when it is recorded: in the transaction that ends the job, so a
committed final state always has its delivery row, and a rolled-back one has none."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.generations.models import image_url
from app.jobs.models import Job, JobKind, JobState
from app.orm import utcnow
from app.users.models import User
from app.webhooks import delivery
from app.webhooks.models import DeliveryState, WebhookDelivery
from app.webhooks.signing import new_secret


def ensure_secret(user: User) -> str:
    """The person's webhook secret, made now if they have none (the caller commits)."""
    if not user.webhook_secret:
        user.webhook_secret = new_secret()
    return user.webhook_secret


def callback_for(user: User, url: str | None) -> str | None:
    """A job's callback URL (already checked); its owner gets a secret to verify it with."""
    if url:
        ensure_secret(user)
    return url or None


def rotate_secret(user: User) -> str:
    """A new secret; deliveries still pending are signed with it from their next attempt."""
    user.webhook_secret = new_secret()
    return user.webhook_secret


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def payload(job: Job, origin: str) -> dict[str, Any]:
    """The event: `{type, timestamp, data}` (the Standard Webhooks shape), from the job row.

    `data` names the job and what it made: a fit's concept (and its file once ready), a
    generation's images, each with the API URL that serves it to the job's owner.
    """
    result = job.result or {}
    image_ids = result.get("image_ids") or result.get("sample_image_ids") or []
    generation_id = job.generation_id or result.get("sample_generation_id")
    succeeded_fit = job.kind == JobKind.fit and job.state == JobState.succeeded
    concept_url = f"{origin}/api/concepts/{job.concept_id}" if job.concept_id else None
    data = {
        "job_id": str(job.id),
        "kind": job.kind.value,
        "status": job.state.value,
        "error": job.error,
        "attempts": job.attempts,
        "job_url": f"{origin}/api/jobs/{job.id}",
        "concept_id": str(job.concept_id) if job.concept_id else None,
        "concept_url": concept_url,
        "concept_file_url": f"{concept_url}/file" if succeeded_fit and concept_url else None,
        "generation_id": str(generation_id) if generation_id else None,
        "images": [{"id": i, "url": f"{origin}{image_url(uuid.UUID(i))}"} for i in image_ids],
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
    }
    return {"type": f"job.{job.state.value}", "timestamp": _iso(job.finished_at), "data": data}


def record_delivery(session: Session, job: Job) -> WebhookDelivery | None:
    """Add the delivery of a job that just reached its final state (`finish_job` calls this),
    due at once; the process's dispatcher is woken once the transaction commits."""
    if not job.callback_url or job.owner_id is None:
        return None
    body = payload(job, get_settings().origin)
    row = WebhookDelivery(
        job_id=job.id,
        owner_id=job.owner_id,
        event=body["type"],
        url=job.callback_url,
        body=json.dumps(body, separators=(",", ":")),
        state=DeliveryState.pending,
        next_attempt_at=utcnow(),
    )
    session.add(row)

    @event.listens_for(session, "after_commit", once=True)
    def _wake(_session: Session) -> None:
        delivery.wake()

    return row


def latest_delivery(session: Session, job_id: uuid.UUID) -> WebhookDelivery | None:
    return session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job_id)
        .order_by(WebhookDelivery.created_at.desc())
        .limit(1)
    )
