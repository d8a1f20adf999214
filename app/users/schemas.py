"""Request and response shapes for accounts and API tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]{3,40}$"


class Credentials(BaseModel):
    username: str = Field(
        pattern=USERNAME_PATTERN,
        description="3–40 letters, digits, `_`, `.` or `-` (case-insensitive).",
    )
    password: str = Field(min_length=8, max_length=256)


class LoginIn(BaseModel):
    username: str = Field(max_length=100)
    password: str = Field(max_length=256)


class UserOut(BaseModel):
    id: uuid.UUID
    username: str
    created_at: datetime


class TokenIn(BaseModel):
    name: str = Field(default="script", min_length=1, max_length=100)


class TokenOut(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None = None


class NewTokenOut(TokenOut):
    token: str = Field(description="The secret; shown only once. Send `Authorization: Bearer …`.")
