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

__all__ = [
    "ApiToken",
    "Base",
    "Blob",
    "Concept",
    "ConceptPhoto",
    "ConceptStatus",
    "GeneratedImage",
    "Generation",
    "Job",
    "JobKind",
    "JobState",
    "ShareGrant",
    "ShareLink",
    "User",
    "Visibility",
]
