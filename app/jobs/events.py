"""Typed progress events that workers publish and the browser receives over a websocket."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class StateEvent(BaseModel):
    type: Literal["state"] = "state"
    state: str
    error: str | None = None
    attempt: int | None = None


class StepEvent(BaseModel):
    type: Literal["step"] = "step"
    step: int
    total: int
    loss: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    image_index: int | None = None
    """For generations: which of the n images this denoising step belongs to."""


class PreviewEvent(BaseModel):
    type: Literal["preview"] = "preview"
    step: int
    data_url: str
    """A small PNG as a data: URL."""


class ImageEvent(BaseModel):
    type: Literal["image"] = "image"
    index: int
    image_id: str
    url: str


class QueueEvent(BaseModel):
    type: Literal["queue"] = "queue"
    position: int
    """1 = next to run."""
