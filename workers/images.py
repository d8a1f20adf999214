"""PNG encoding for results: generation parameters in text chunks, small previews as data URLs."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from PIL import Image, PngImagePlugin

PARAMETERS_KEY = "perfusion-studio"
"""The PNG text chunk holding every generation parameter as JSON."""


def png_bytes(image: Image.Image, parameters: dict[str, Any] | None = None) -> bytes:
    """The image as PNG; each parameter also as its own text chunk, all of them as JSON."""
    info = PngImagePlugin.PngInfo()
    for key, value in (parameters or {}).items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    if parameters:
        info.add_text(PARAMETERS_KEY, json.dumps(parameters, sort_keys=True))
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def png_parameters(data: bytes) -> dict[str, Any]:
    """The parameters `png_bytes` embedded."""
    with Image.open(io.BytesIO(data)) as image:
        text = getattr(image, "text", {})
        return json.loads(text[PARAMETERS_KEY]) if PARAMETERS_KEY in text else {}


def preview_data_url(image: Image.Image, max_side: int = 128) -> str:
    """A small PNG data: URL for progress previews."""
    thumb = image.convert("RGB")
    thumb.thumbnail((max_side, max_side))
    out = io.BytesIO()
    thumb.save(out, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def open_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
