"""Turning an uploaded file into a safe, normalised image (or a clear refusal).

The bytes are recognised by decoding them with an allow-list of Pillow decoders, never by
file name or content type. What is stored is a fresh RGB PNG: orientation applied, alpha
composited on white, at most `image_store_max_side` a side, with no metadata at all (EXIF,
GPS, ICC, text chunks) and nothing appended (polyglots lose their payload).

Animated images (GIF, WebP, APNG) are accepted: only the first frame is decoded and kept.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from app.config import Settings, get_settings

# Decoders we trust with hostile bytes; others (EPS runs Ghostscript, TIFF/PSD/ICNS...) stay off.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")  # JPEG includes MPO (phone photos)
MAX_PIXELS = Settings.model_fields["image_max_pixels"].default
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class UploadRejected(ValueError):
    """The upload is not an image we accept; the message is for the person."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class SanitizedImage:
    data: bytes
    content_type: str
    width: int
    height: int
    source_size: tuple[int, int]
    """(width, height) as uploaded, oriented, before any downscaling to the stored size."""


def display_name(filename: str) -> str:
    """The client's file name, made safe to echo back (no control characters, bounded)."""
    return re.sub(r"[\x00-\x1f\x7f]", "", filename)[:100] or "upload"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any decoded mode to 8-bit RGB; 16-bit is scaled, not clipped; alpha goes on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grey: a plain convert("L") clips everything above 255 to white.
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def decode_upload(data: bytes, name: str, settings: Settings) -> Image.Image:
    """The first frame of an allow-listed image, loaded and oriented (EXIF), in its own mode;
    UploadRejected with a message naming `name` when it is empty, too big or not an image."""
    if not data:
        raise UploadRejected(f"{name}: the file is empty")
    # Pillow's own bomb guard (process-wide): it warns above this, which we make an error,
    # and raises above twice this; our explicit check below covers the gap.
    Image.MAX_IMAGE_PIXELS = settings.image_max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as img:
                if img.width * img.height > settings.image_max_pixels:
                    raise Image.DecompressionBombError("over the pixel limit")
                img.load()  # first frame only; a truncated or corrupt file fails here
                oriented = ImageOps.exif_transpose(img)
                oriented.load()
                return oriented
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadRejected(
            f"{name}: the image has too many pixels (at most {settings.image_max_pixels:,})"
        ) from exc
    except Image.UnidentifiedImageError as exc:
        raise UploadRejected(
            f"{name}: not an image we accept (JPEG, PNG, WebP or GIF)", status_code=415
        ) from exc
    except Exception as exc:  # truncated, corrupt, or a decoder error of any kind
        raise UploadRejected(f"{name}: the image is damaged or incomplete") from exc


def clean_png(image: Image.Image) -> bytes:
    """A PNG of the pixels alone: a new image from raw bytes carries no info dict, so nothing
    of the original (metadata, appended payloads) survives."""
    clean = Image.frombytes(image.mode, image.size, image.tobytes())
    out = io.BytesIO()
    clean.save(out, format="PNG")
    return out.getvalue()


def sanitize_image(
    data: bytes, filename: str = "upload", settings: Settings | None = None
) -> SanitizedImage:
    """Decode (first frame), orient, normalise to RGB and re-encode as metadata-free PNG."""
    settings = settings or get_settings()
    name = display_name(filename)
    oriented = decode_upload(data, name, settings)
    try:
        rgb = _to_rgb(oriented)
    except Exception as exc:  # a decoder error surfacing at conversion
        raise UploadRejected(f"{name}: the image is damaged or incomplete") from exc
    if min(rgb.size) < settings.image_min_side:
        raise UploadRejected(
            f"{name}: the image is too small "
            f"({rgb.width}×{rgb.height}; at least {settings.image_min_side} px a side)"
        )
    source_size = rgb.size
    bound = settings.image_store_max_side
    if max(rgb.size) > bound:
        rgb.thumbnail((bound, bound), Image.Resampling.LANCZOS)
    return SanitizedImage(clean_png(rgb), "image/png", rgb.width, rgb.height, source_size)
