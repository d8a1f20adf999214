"""Signed session cookies: `user_id.issued_at.signature`, HMAC-SHA256 with the secret key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

SESSION_COOKIE = "studio_session"
SESSION_MAX_AGE_S = 14 * 24 * 3600


def _sign(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_session_value(secret: str, user_id: uuid.UUID, now: float | None = None) -> str:
    payload = f"{user_id.hex}.{int(now if now is not None else time.time())}"
    return f"{payload}.{_sign(secret, payload)}"


def read_session_value(secret: str, value: str, now: float | None = None) -> uuid.UUID | None:
    """The user id in a valid, unexpired cookie value, else None."""
    try:
        user_hex, issued, signature = value.split(".")
        payload = f"{user_hex}.{issued}"
        if not hmac.compare_digest(signature, _sign(secret, payload)):
            return None
        age = (now if now is not None else time.time()) - int(issued)
        if age < 0 or age > SESSION_MAX_AGE_S:
            return None
        return uuid.UUID(hex=user_hex)
    except ValueError:
        return None
