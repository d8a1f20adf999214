"""Hand-built concept files (safetensors layout, Perfusion metadata) for tests, no torch."""

from __future__ import annotations

import json
import struct
from typing import Any

LAYERS = [["down.attn2", 8], ["up.attn2", 6]]
META = {
    "format": "perfusion-concept",
    "format_version": "1",
    "token": "<rex>",
    "superclass": "dog",
    "base_model_id": "toyworld",
    "base_fingerprint": "abc",
    "covariance_fingerprint": "def",
    "default_beta": "0.7",
    "default_tau": "0.15",
    "i_star_energy": "1.5",
    "layers": json.dumps(LAYERS),
    "training": "{}",
}


def f32(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def build(
    tensors: dict[str, tuple[str, list[int], bytes]] | None = None,
    meta: dict[str, Any] | None = None,
    header_extra: dict[str, Any] | None = None,
) -> bytes:
    """A safetensors file from (dtype, shape, raw bytes) per tensor, laid out in order."""
    if tensors is None:
        tensors = {
            n: ("F32", [4], f32([0.5, -1, 2, 0]))
            for n in ("token_embedding", "i_star", "e_super", "score")
        }
        tensors["o_v"] = ("F32", [14], f32([0.25] * 14))
    header: dict[str, Any] = {"__metadata__": META if meta is None else meta}
    buffer = b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [len(buffer), len(buffer) + len(raw)],
        }
        buffer += raw
    header.update(header_extra or {})
    raw_header = json.dumps(header).encode()
    return struct.pack("<Q", len(raw_header)) + raw_header + buffer
