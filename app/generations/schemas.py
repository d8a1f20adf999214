"""Request and response shapes for generations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.concepts.schemas import ImageRef, ResolvedToken
from app.jobs.params import (
    DEFAULT_STRENGTH,
    Guidance,
    ImageCount,
    NegativePrompt,
    Prompt,
    Seed,
    Steps,
    Strength,
)
from app.jobs.schemas import JobRef
from app.webhooks.urls import CallbackUrl


class GenerationIn(BaseModel):
    prompt: Prompt
    negative_prompt: NegativePrompt = ""
    n: ImageCount = Field(default=2, description="Number of images, 1–4.")
    seed: Seed | None = Field(default=None, description="Fixed seed; empty = random.")
    steps: Steps = 25
    guidance: Guidance = 7.5
    strength: Strength = Field(
        default=DEFAULT_STRENGTH, description="0 = follow the prompt, 1 = follow the concept."
    )
    concept_id: uuid.UUID | None = Field(
        default=None, description="The concept page this was started from (its history)."
    )
    callback_url: CallbackUrl | None = None


class SweepIn(GenerationIn):
    n: int = Field(default=1, ge=1, le=1)
    strengths: list[Strength] = Field(default=[0.2, 0.4, 0.6, 0.8, 1.0], min_length=2, max_length=5)


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
