"""Turning an uploaded file into a safe, normalised image (or a clear refusal)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps

MAX_PIXELS = 40_000_000
MIN_SIDE = 32


class UploadRejected(ValueError):
    """The upload is not an image we accept; the message is for the person."""


@dataclass(frozen=True)
class SanitizedImage:
    data: bytes
    content_type: str
    width: int
    height: int


def sanitize_image(data: bytes, filename: str = "upload") -> SanitizedImage:
    """Decode, apply EXIF orientation, convert to RGB and re-encode as PNG without metadata."""
    if not data:
        raise UploadRejected(f"{filename}: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise UploadRejected(
                    f"{filename}: the image is too large ({img.width}×{img.height})"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = img.convert("RGB")
    except UploadRejected:
        raise
    except Exception as exc:
        raise UploadRejected(f"{filename}: not a readable image") from exc
    if min(rgb.size) < MIN_SIDE:
        raise UploadRejected(f"{filename}: the image is too small (at least {MIN_SIDE} px a side)")
    out = io.BytesIO()
    rgb.save(out, format="PNG", optimize=False)
    return SanitizedImage(out.getvalue(), "image/png", rgb.width, rgb.height)
