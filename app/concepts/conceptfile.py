"""Reading a concept file's safetensors header in the web process (no torch, no numpy).

Import validation is split on purpose: the web checks here what the header can prove
(a safetensors file, the Perfusion format and version, a well-formed token, tensors that lie
inside the file, and the base model fingerprint when this install knows it), so a bad upload
gets a clear 4xx at once and `app/` never imports torch. The worker's `concept_from_bytes` +
`validate_concept` still check every shape against the loaded base model when it first
applies the concept; a mismatch there fails that job with the library's message.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass

FORMAT = "perfusion-concept"
FORMAT_VERSION = "1"
MAX_FILE_BYTES = 5 * 1024 * 1024
REQUIRED_TENSORS = ("token_embedding", "i_star", "e_super", "score", "o_v")
DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
TOKEN_RE = re.compile(r"^<[a-z0-9][a-z0-9_-]{0,36}>$")


class ConceptFileError(ValueError):
    """The upload is not a usable concept file; the message is for the person."""


@dataclass(frozen=True)
class ConceptHeader:
    token: str
    superclass: str
    base_fingerprint: str
    base_model_id: str
    training: dict[str, object]


def read_header(data: bytes) -> ConceptHeader:
    """Parse and check the header of a Perfusion concept file."""
    if len(data) > MAX_FILE_BYTES:
        raise ConceptFileError("The file is too large for a concept file (at most 5 MB).")
    if len(data) < 8:
        raise ConceptFileError("Not a .safetensors file (too short).")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise ConceptFileError("Not a .safetensors file (bad header length).")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConceptFileError("Not a .safetensors file (the header is not JSON).") from None
    if not isinstance(header, dict):
        raise ConceptFileError("Not a .safetensors file (the header is not an object).")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConceptFileError("This .safetensors file is not a Perfusion concept.")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConceptFileError(
            f"Unsupported concept format version {meta.get('format_version')!r} "
            f"(this app reads version {FORMAT_VERSION})."
        )
    _check_tensors(header, len(data) - 8 - header_len)
    token = str(meta.get("token", ""))
    if not TOKEN_RE.match(token):
        raise ConceptFileError(f"The concept's token {token!r} is not of the form <name>.")
    try:
        training = json.loads(meta.get("training") or "{}")
        json.loads(meta["layers"])
    except (KeyError, json.JSONDecodeError):
        raise ConceptFileError("The concept file's metadata is damaged.") from None
    return ConceptHeader(
        token=token,
        superclass=str(meta.get("superclass", ""))[:40] or "object",
        base_fingerprint=str(meta.get("base_fingerprint", "")),
        base_model_id=str(meta.get("base_model_id", "")),
        training=training if isinstance(training, dict) else {},
    )


def _check_tensors(header: dict[str, object], body_len: int) -> None:
    missing = [name for name in REQUIRED_TENSORS if name not in header]
    if missing:
        raise ConceptFileError(f"The concept file lacks tensors: {', '.join(missing)}.")
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ConceptFileError(f"Tensor {name!r} has a damaged entry.")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_BYTES or not isinstance(shape, list) or not isinstance(offsets, list):
            raise ConceptFileError(f"Tensor {name!r} has an unsupported type or layout.")
        count = 1
        for dim in shape:
            count *= int(dim)
        start, end = int(offsets[0]), int(offsets[1])
        if not 0 <= start <= end <= body_len or end - start != count * DTYPE_BYTES[dtype]:
            raise ConceptFileError(f"Tensor {name!r} does not fit in the file.")


def fingerprint_of(data: bytes) -> str:
    """The base fingerprint recorded in a (trusted, worker-written) concept file."""
    try:
        (header_len,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
        return str(meta.get("base_fingerprint", ""))
    except (struct.error, ValueError, AttributeError):
        return ""
