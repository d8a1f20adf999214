"""Secrets handed to people (API tokens, share links): CSPRNG, stored only as hashes."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_BYTES = 32  # 256 bits from the OS CSPRNG


def new_token(prefix: str = "") -> str:
    """A fresh URL-safe secret, optionally prefixed (e.g. `pst_` for API tokens)."""
    return prefix + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """SHA-256 hex: tokens are high-entropy, so a fast hash is the right lookup key."""
    return hashlib.sha256(token.encode()).hexdigest()
