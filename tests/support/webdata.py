"""Test data: photos drawn with Pillow and hand-built concept files (no torch needed)."""

from __future__ import annotations

import io
import json
import struct

from PIL import Image, ImageDraw


def photo_png(index: int, size: int = 64) -> bytes:
    """A distinct little 'photo': a two-tone disc on a coloured background."""
    img = Image.new("RGB", (size, size), ((40 * index) % 255, 120, 200))
    draw = ImageDraw.Draw(img)
    r = size // 4 + index % 4
    c = size // 2
    draw.ellipse([c - r, c - r, c + r, c + r], fill=(240, 200, 30))
    draw.rectangle([c, c - r, c + r, c + r], fill=(200, 40, 60))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def mask_png(white_columns: int, size: tuple[int, int] = (64, 64), mode: str = "L") -> bytes:
    """A subject mask: the first `white_columns` columns white, the rest black (mode "1", "L",
    or "RGBA": a cut-out, opaque where white, transparent elsewhere)."""
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, white_columns, size[1]))
    if mode == "RGBA":
        image = Image.new("RGBA", size, (90, 140, 30, 0))
        image.putalpha(mask)
    else:
        image = mask.convert(mode)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def concept_file(
    token: str = "<imported>",
    fingerprint: str = "f" * 64,
    *,
    fmt: str = "perfusion-concept",
    dim: int = 8,
    layers: tuple[tuple[str, int], ...] = (("up.attn2", 4), ("down.attn2", 4)),
) -> bytes:
    """A structurally valid Perfusion concept .safetensors file (float32 zeros)."""
    tensors: dict[str, tuple[list[int], int]] = {
        name: ([dim], dim) for name in ("token_embedding", "i_star", "e_super", "score")
    }
    total = sum(n for _, n in layers)
    tensors["o_v"] = ([total], total)
    header: dict[str, object] = {}
    offset = 0
    for name, (shape, count) in tensors.items():
        header[name] = {
            "dtype": "F32",
            "shape": shape,
            "data_offsets": [offset, offset + 4 * count],
        }
        offset += 4 * count
    header["__metadata__"] = {
        "format": fmt,
        "format_version": "1",
        "token": token,
        "superclass": "toy",
        "base_model_id": "toyworld",
        "base_fingerprint": fingerprint,
        "covariance_fingerprint": "c" * 64,
        "default_beta": "0.7",
        "default_tau": "0.15",
        "i_star_energy": "1.0",
        "layers": json.dumps([list(layer) for layer in layers]),
        "training": json.dumps({"steps": 10}),
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"\0" * offset
