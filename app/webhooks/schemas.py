"""API shapes of webhooks: a job's delivery status, the signing secret."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from app.webhooks.models import DeliveryState, WebhookDelivery


class WebhookOut(BaseModel):
    """Where a job's webhook stands (on GET /api/jobs/{id} of a job with a callback URL)."""

    id: str
    """The `Webhook-Id` header of every attempt."""
    event: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None

    @classmethod
    def of(cls, row: WebhookDelivery) -> WebhookOut:
        return cls(
            id=row.webhook_id,
            event=row.event,
            state=row.state,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            delivered_at=row.delivered_at,
            last_status=row.last_status,
            last_error=row.last_error,
        )


class SecretOut(BaseModel):
    secret: str
    """`whsec_` + base64: the key of every webhook's `Webhook-Signature` (docs/webhooks.md)."""
