"""Standard Webhooks signatures (https://www.standardwebhooks.com), made by the spec's own
Python implementation: HMAC-SHA256 of `{id}.{timestamp}.{body}` with the person's secret,
sent as `Webhook-Signature: v1,<base64>`."""

from __future__ import annotations

import base64
import secrets
import time
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret, `whsec_` + base64 of 32 random bytes (the spec's format)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signed_headers(
    secret: str, webhook_id: str, body: str, timestamp: int | None = None
) -> dict[str, str]:
    """The headers of one attempt: the id stays, the timestamp (and so the signature) is the
    attempt's own, so receivers can refuse replays older than a few minutes."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(timestamp, UTC), body)
    return {
        "Content-Type": "application/json",
        "User-Agent": "PerfusionStudio-Webhooks/1",
        "Webhook-Id": webhook_id,
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": signature,
    }
