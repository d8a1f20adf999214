"""The signed-in person's webhook secret: read it (made on first read) or replace it."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.deps import CurrentUser
from app.deps import SessionDep
from app.webhooks import service
from app.webhooks.schemas import SecretOut

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])


@router.get("/secret")
def read_secret(user: CurrentUser, session: SessionDep) -> SecretOut:
    """The secret that signs your jobs' webhooks (`Webhook-Signature`, Standard Webhooks)."""
    return SecretOut(secret=service.ensure_secret(user))


@router.post("/secret")
def rotate_secret(user: CurrentUser, session: SessionDep) -> SecretOut:
    """Replace the secret; webhooks still being retried are signed with the new one."""
    return SecretOut(secret=service.rotate_secret(user))
