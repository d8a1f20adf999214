"""Request and response shapes for concepts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.concepts.models import NAME_MAX_CHARS, Visibility
from app.generations.models import GeneratedImage, image_url
from app.jobs.schemas import JobRef


class CreatedOut(BaseModel):
    """A resource whose work was queued: poll the job or watch `/ws/jobs/{job.id}`."""

    id: uuid.UUID
    job: JobRef


class ImageRef(BaseModel):
    id: uuid.UUID
    url: str
    seed: int
    width: int
    height: int

    @classmethod
    def of(cls, image: GeneratedImage) -> ImageRef:
        return cls(
            id=image.id,
            url=image_url(image.id),
            seed=image.seed,
            width=image.width,
            height=image.height,
        )


class PhotoRef(BaseModel):
    id: uuid.UUID
    url: str
    width: int
    height: int


class ConceptOut(BaseModel):
    id: uuid.UUID
    name: str
    token: str
    superclass: str
    visibility: Visibility
    status: str
    """fitting / ready / failed / canceled."""
    base_model: str
    architecture: str | None = Field(
        default=None,
        description="Base architecture of the concept file: sd (SD 1.x/2.x) or sdxl; "
        "null until the first fit has stored it.",
    )
    owner: str
    is_owner: bool
    created_at: datetime
    settings: dict[str, Any]
    samples: list[ImageRef]
    photos: list[PhotoRef] = Field(description="Training photos; only their owner sees them.")
    file_url: str | None
    page_url: str
    job: JobRef | None = Field(description="The latest fit job (owner only).")
    share_link_active: bool = False


class ConceptPage(BaseModel):
    items: list[ConceptOut]
    page: int
    per_page: int
    total: int


class ConceptPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX_CHARS)
    visibility: Visibility | None = None


class ShareOut(BaseModel):
    url: str
    """Shown only once; creating a new link revokes the previous one."""


class TokenCheck(BaseModel):
    token: str
    valid: bool
    available: bool
    message: str


class ResolvedToken(BaseModel):
    token: str
    concept_id: uuid.UUID
    name: str


class Resolution(BaseModel):
    recognized: list[ResolvedToken]
    unknown: list[str]
