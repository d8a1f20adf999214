"""Request and response shapes for generations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.concepts.schemas import ImageRef, JobRef, ResolvedToken

MAX_SEED = 2**32 - 1


class GenerationIn(BaseModel):
    prompt: str = Field(min_length=1, max_length=500)
    negative_prompt: str = Field(default="", max_length=500)
    n: int = Field(default=2, ge=1, le=4, description="Number of images, 1–4.")
    seed: int | None = Field(
        default=None, ge=0, le=MAX_SEED, description="Fixed seed; empty = random."
    )
    steps: int = Field(default=25, ge=1, le=150)
    guidance: float = Field(default=7.5, ge=0, le=30)
    strength: float = Field(
        default=0.6, ge=0, le=1, description="0 = follow the prompt, 1 = follow the concept."
    )
    concept_id: uuid.UUID | None = Field(
        default=None, description="The concept page this was started from (its history)."
    )


class SweepIn(GenerationIn):
    n: int = Field(default=1, ge=1, le=1)
    strengths: list[float] = Field(default=[0.2, 0.4, 0.6, 0.8, 1.0], min_length=2, max_length=5)


class GenerationOut(BaseModel):
    id: uuid.UUID
    concept_id: uuid.UUID | None
    prompt: str
    negative_prompt: str
    params: dict[str, Any]
    created_at: datetime
    images: list[ImageRef]
    job: JobRef | None
    recognized: list[ResolvedToken] = []


class GenerationCreated(BaseModel):
    id: uuid.UUID
    job: JobRef
    seed: int
    recognized: list[ResolvedToken]
    unknown: list[str]


class SweepCreated(BaseModel):
    sweep: str
    items: list[GenerationCreated]
