"""Turning an uploaded subject mask into a clean greyscale PNG the size of its photo.

A mask says where the subject is in one training photo: white = subject (full loss weight),
black = background (none), grey in between. Accepted: greyscale or 1-bit images, RGB (its
luminance), or an image with transparency, whose alpha is the mask (a cut-out of the subject).
It is decoded like a photo (`decode_upload`: the same allow-list and pixel limits), must have
its photo's shape, and is resized to the stored photo with bilinear filtering (soft edges are
fine: the fit averages the mask down to latent resolution anyway).
"""

from __future__ import annotations

from PIL import Image

from app.config import Settings, get_settings
from app.uploads.images import UploadRejected, clean_png, decode_upload, display_name

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
BLACK_BELOW = 8
"""A mask whose brightest pixel is below this (of 255) marks no subject at all."""
SHAPE_TOLERANCE = 0.01
"""How far (relative) a mask's aspect ratio may be from its photo's: rounding of a resize."""


def _weights(img: Image.Image) -> Image.Image:
    """Any decoded mode to 8-bit greyscale weights: alpha when the image has transparency,
    else luminance; 16-bit is scaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ALPHA_MODES:
        alpha = img.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:  # a fully opaque alpha says nothing: use the pixels
            return alpha
    return img.convert("L")


def _same_shape(mask: tuple[int, int], photo: tuple[int, int]) -> bool:
    (mw, mh), (pw, ph) = mask, photo
    return abs(mh * pw / mw - ph) <= max(1.0, SHAPE_TOLERANCE * ph)


def sanitize_mask(
    data: bytes,
    filename: str,
    photo_name: str,
    photo_source_size: tuple[int, int],
    photo_size: tuple[int, int],
    settings: Settings | None = None,
) -> bytes:
    """The mask as a metadata-free greyscale PNG of `photo_size` (the stored photo's), or
    UploadRejected saying what is wrong: not an image, not the photo's shape, all black."""
    settings = settings or get_settings()
    name = display_name(filename)
    decoded = decode_upload(data, name, settings)
    try:
        mask = _weights(decoded)
    except Exception as exc:  # a decoder error surfacing at conversion
        raise UploadRejected(f"{name}: the mask is damaged or incomplete") from exc
    if not _same_shape(mask.size, photo_source_size):
        sw, sh = photo_source_size
        raise UploadRejected(
            f"{name}: the mask is {mask.width}×{mask.height} but its photo "
            f"{display_name(photo_name)} is {sw}×{sh}; a mask has its photo's size."
        )
    if mask.size != photo_size:
        mask = mask.resize(photo_size, Image.Resampling.BILINEAR)
    if mask.getextrema()[1] < BLACK_BELOW:
        raise UploadRejected(
            f"{name}: the mask is all black; white marks the subject, black the background."
        )
    return clean_png(mask)
