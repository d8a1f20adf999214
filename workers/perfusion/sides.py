"""Which text side a pipeline has (its own module: `text` and `sdxl` import no chooser)."""

from __future__ import annotations

from typing import Any

from .sdxl import SDXLText
from .text import SDText, TextSide


def text_side(pipe: Any) -> TextSide:
    """The text side of a pipeline: SDXL when it has a second text encoder, else SD."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        return SDXLText(pipe)
    return SDText(pipe)


def architecture(pipe: Any) -> str:
    """`sd` (SD 1.x/2.x) or `sdxl`."""
    return text_side(pipe).arch
