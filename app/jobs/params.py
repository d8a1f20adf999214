"""The typed contract across the broker: each job kind's parameters, and every bound on them.

Services build these models, the job row stores them as JSON, and the worker's handler
validates the row against the same model (`JobContext.parse`), so both sides of the broker
agree on every field, default and limit. The request schemas use the same `Annotated` types,
so the bounds appear in the OpenAPI schema and out-of-range values are a 422, never a worker
crash.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.concepts.models import SUPERCLASS_MAX_CHARS, TOKEN_MAX_CHARS
from app.jobs.models import JobKind

PROMPT_MAX_CHARS = 500
NEGATIVE_PROMPT_MAX_CHARS = 500
STEPS_MIN, STEPS_MAX = 1, 100
IMAGES_MIN, IMAGES_MAX = 1, 4
GUIDANCE_MIN, GUIDANCE_MAX = 0.0, 20.0
SEED_MIN, SEED_MAX = 0, 2**32 - 1
STRENGTH_MIN, STRENGTH_MAX = 0.0, 1.0
# 0.5 is λ = 1: the trained concept as the paper renders it (workers/perfusion/apply.py).
DEFAULT_STRENGTH = 0.5
FIT_STEPS_MIN, FIT_STEPS_MAX = 1, 5000
SAMPLES_MAX = IMAGES_MAX

Prompt = Annotated[str, Field(min_length=1, max_length=PROMPT_MAX_CHARS)]
NegativePrompt = Annotated[str, Field(max_length=NEGATIVE_PROMPT_MAX_CHARS)]
Steps = Annotated[int, Field(ge=STEPS_MIN, le=STEPS_MAX)]
ImageCount = Annotated[int, Field(ge=IMAGES_MIN, le=IMAGES_MAX)]
Guidance = Annotated[float, Field(ge=GUIDANCE_MIN, le=GUIDANCE_MAX, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=SEED_MIN, le=SEED_MAX)]
Strength = Annotated[float, Field(ge=STRENGTH_MIN, le=STRENGTH_MAX, allow_inf_nan=False)]
FitSteps = Annotated[int, Field(ge=FIT_STEPS_MIN, le=FIT_STEPS_MAX)]


def random_seed() -> int:
    """A seed for a generation or fit whose seed was left empty."""
    return secrets.randbelow(SEED_MAX + 1)


class JobParams(BaseModel):
    """Parameters of one job kind; `kind` names it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ClassVar[JobKind]


class PingParams(JobParams):
    kind = JobKind.ping


class SamplePolicy(BaseModel):
    """The sample images a fit renders with its new concept and stores on the concept page."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(default=2, ge=0, le=SAMPLES_MAX)
    steps: Steps = 25
    guidance: Guidance = 7.5
    strength: Strength = DEFAULT_STRENGTH
    prompt: str = "a photo of a {token}"
    """`{token}` is replaced by the concept's trigger token (`prompt_for`)."""

    def prompt_for(self, token: str) -> str:
        return self.prompt.replace("{token}", token)


class FitParams(JobParams):
    kind = JobKind.fit

    token: str = Field(min_length=3, max_length=TOKEN_MAX_CHARS)
    superclass: str = Field(min_length=1, max_length=SUPERCLASS_MAX_CHARS)
    steps: FitSteps
    seed: Seed
    samples: SamplePolicy = SamplePolicy()

    @field_validator("samples", mode="before")
    @classmethod
    def _count_only(cls, value: Any) -> Any:
        # Rows queued before the policy was part of the contract hold only the count.
        return {"count": value} if isinstance(value, int) else value


class GenerateParams(JobParams):
    kind = JobKind.generate

    prompt: Prompt
    negative_prompt: NegativePrompt = ""
    n: ImageCount
    seed: Seed
    steps: Steps
    guidance: Guidance
    strength: Strength
    concept_ids: list[uuid.UUID] = Field(default_factory=list)
    """The ready concepts whose tokens the prompt uses, in prompt order."""


PARAMS_FOR_KIND: dict[JobKind, type[JobParams]] = {
    params.kind: params for params in (PingParams, FitParams, GenerateParams)
}
