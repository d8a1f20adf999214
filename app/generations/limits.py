"""Bounds on prompts and generation parameters, shared by every schema that accepts them.

Use the `Annotated` types in pydantic models (`prompt: Prompt`, `steps: Steps = 30`) so the
bounds appear in the OpenAPI schema and out-of-range values are a 422, never a worker crash.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

PROMPT_MAX_CHARS = 500
NEGATIVE_PROMPT_MAX_CHARS = 500
STEPS_MIN, STEPS_MAX = 1, 100
IMAGES_MIN, IMAGES_MAX = 1, 4
GUIDANCE_MIN, GUIDANCE_MAX = 0.0, 20.0
SEED_MIN, SEED_MAX = 0, 2**32 - 1
STRENGTH_MIN, STRENGTH_MAX = 0.0, 1.0

Prompt = Annotated[str, Field(min_length=1, max_length=PROMPT_MAX_CHARS)]
NegativePrompt = Annotated[str, Field(max_length=NEGATIVE_PROMPT_MAX_CHARS)]
Steps = Annotated[int, Field(ge=STEPS_MIN, le=STEPS_MAX)]
ImageCount = Annotated[int, Field(ge=IMAGES_MIN, le=IMAGES_MAX)]
Guidance = Annotated[float, Field(ge=GUIDANCE_MIN, le=GUIDANCE_MAX, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=SEED_MIN, le=SEED_MAX)]
Strength = Annotated[float, Field(ge=STRENGTH_MIN, le=STRENGTH_MAX, allow_inf_nan=False)]
