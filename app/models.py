"""Imports every model so `Base.metadata` is complete (Alembic and tests use this)."""

from app.concepts.models import (
    Concept,
    ConceptPhoto,
    ConceptStatus,
    ShareGrant,
    ShareLink,
    Visibility,
)
from app.generations.models import GeneratedImage, Generation
from app.jobs.models import Job, JobKind, JobState
from app.orm import Base
from app.storage.models import Blob
from app.users.models import ApiToken, User
from app.webhooks.models import DeliveryState, WebhookDelivery

__all__ = [
    "ApiToken",
    "Base",
    "Blob",
    "Concept",
    "ConceptPhoto",
    "ConceptStatus",
    "DeliveryState",
    "GeneratedImage",
    "Generation",
    "Job",
    "JobKind",
    "JobState",
    "ShareGrant",
    "ShareLink",
    "User",
    "Visibility",
    "WebhookDelivery",
]
