"""PNG encoding for results (generation parameters in text chunks, previews as data URLs);
opening the stored photos and masks a fit reads."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from PIL import Image, PngImagePlugin

PARAMETERS_KEY = "perfusion-studio"
"""The PNG text chunk holding every generation parameter as JSON."""
A1111_KEY = "parameters"
"""The text chunk AUTOMATIC1111's web UI writes and image viewers and galleries read."""


def a1111_parameters(parameters: dict[str, Any], size: tuple[int, int]) -> str:
    """The parameters in AUTOMATIC1111's text form: the prompt, `Negative prompt: …`, then one
    line of `Key: value` pairs (Steps, Sampler, CFG scale, Seed, Size, Model, …)."""
    lines = [str(parameters.get("prompt", ""))]
    if parameters.get("negative_prompt"):
        lines.append(f"Negative prompt: {parameters['negative_prompt']}")
    base = str(parameters.get("base_model") or "").rstrip("/")
    pairs = {
        "Steps": parameters.get("steps"),
        "Sampler": parameters.get("sampler"),
        "CFG scale": parameters.get("guidance"),
        "Seed": parameters.get("seed"),
        "Size": f"{size[0]}x{size[1]}",
        "Model": "/".join(base.split("/")[-2:]) if base.startswith("/") else base or None,
        "Perfusion strength": parameters.get("strength"),
        "Perfusion concepts": " ".join(parameters.get("tokens") or []) or None,
    }
    # A value with a comma would split the line where readers split it: quote it, as A1111 does.
    line = ", ".join(
        f"{key}: {json.dumps(text) if ',' in (text := str(value)) else text}"
        for key, value in pairs.items()
        if value not in (None, "")
    )
    return "\n".join([*lines, line])


def png_bytes(image: Image.Image, parameters: dict[str, Any] | None = None) -> bytes:
    """The image as PNG; each parameter also as its own text chunk, all of them as JSON."""
    info = PngImagePlugin.PngInfo()
    for key, value in (parameters or {}).items():
        if key != A1111_KEY:
            info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    if parameters:
        info.add_text(PARAMETERS_KEY, json.dumps(parameters, sort_keys=True))
        info.add_text(A1111_KEY, a1111_parameters(parameters, image.size))
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


def open_masks(masks: list[bytes | None], photos: list[Image.Image]) -> list[Image.Image] | None:
    """The fit's masks, greyscale, one per photo (uniform white for a photo without one);
    None when no photo has a mask, so the fit is exactly the unmasked one."""
    if not any(mask is not None for mask in masks):
        return None
    opened = []
    for data, photo in zip(masks, photos, strict=True):
        if data is None:
            opened.append(Image.new("L", photo.size, 255))
            continue
        with Image.open(io.BytesIO(data)) as image:
            mask = image.convert("L")
        opened.append(mask if mask.size == photo.size else mask.resize(photo.size))
    return opened
