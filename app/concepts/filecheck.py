"""Web-side pre-check of an imported concept file, without torch and without unpickling.

A concept file is safetensors: 8-byte little-endian header length, a JSON header, then the
raw tensor bytes. Everything is validated against the Perfusion format (workers/perfusion/
concept.py): exactly the tensors token_embedding, i_star, e_super, score (1-D, one length D)
and o_v (1-D, the layers' output sizes concatenated), float dtypes (or an int8 o_v with its
per-block float o_v_scale), contiguous in-range offsets and string metadata. The worker's
`validate_concept` does the final check against the loaded base model; this one keeps
anything else from reaching the database or a worker.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.concepts.models import SUPERCLASS_MAX_CHARS, TOKEN_MAX_CHARS, Concept
from app.config import Settings, get_settings
from app.jobs.models import Job, JobKind, JobState
from app.storage.models import Blob

FORMAT = "perfusion-concept"
FORMAT_VERSION = "1"
ARCHITECTURES = ("sd", "sdxl")  # files without the field predate SDXL: "sd"
VECTORS = ("token_embedding", "i_star", "e_super", "score")
FLAT = "o_v"
SCALE = "o_v_scale"
QUANT_BLOCK = 64  # workers/perfusion/concept.py: one o_v_scale per 64 values of a layer
DTYPE_BYTES = {"F16": 2, "BF16": 2, "F32": 4, "I8": 1}
MAX_HEADER_BYTES = 64 * 1024
MAX_DIM = 8192
MAX_LAYERS = 256
LAYER_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
FOREIGN_MAGIC = {
    b"PK\x03\x04": "a zip archive (e.g. a PyTorch .pt/.ckpt file)",
    b"\x1f\x8b": "a gzip file",
    b"\x80": "a Python pickle",
}


class ConceptFileRejected(ValueError):
    """The file is not an acceptable concept; the message is for the person."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class ConceptSchema:
    """What a base model expects: embedding width and (layer name, value width) in order."""

    dim: int
    layers: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class ConceptFileInfo:
    token: str
    superclass: str
    base_model_id: str
    base_fingerprint: str
    schema: ConceptSchema
    metadata: dict[str, str]
    architecture: str = "sd"


def _reject(message: str, status_code: int = 422) -> ConceptFileRejected:
    return ConceptFileRejected(f"not a valid concept file: {message}", status_code)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers could pick different duplicates; a file must mean one thing only.
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise _reject("duplicate keys in the header")
    return dict(pairs)


def _parse_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The JSON header and where the tensor bytes start."""
    for magic, what in FOREIGN_MAGIC.items():
        if data.startswith(magic):
            raise _reject(f"this is {what}, not safetensors", 415)
    if len(data) < 8:
        raise _reject("too short", 415)
    (length,) = struct.unpack("<Q", data[:8])
    if length < 2 or length > MAX_HEADER_BYTES or 8 + length > len(data):
        raise _reject("header length out of range", 415)
    raw = data[8 : 8 + length]
    if not raw.startswith(b"{"):
        raise _reject("header is not a JSON object", 415)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except ConceptFileRejected:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise _reject("header is not valid JSON", 415) from exc
    if not isinstance(header, dict):
        raise _reject("header is not a JSON object", 415)
    return header, 8 + length


def _check_tensors(entries: dict[str, Any], buffer_len: int) -> dict[str, tuple[str, int]]:
    """(dtype, element count) per tensor; offsets exactly tile the data buffer."""
    expected = {*VECTORS, FLAT} | ({SCALE} if SCALE in entries else set())
    if set(entries) != expected:
        raise _reject(f"expected tensors {sorted(expected)}, found {sorted(entries)[:10]}")
    spans: list[tuple[int, int]] = []
    found: dict[str, tuple[str, int]] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _reject(f"{name}: malformed tensor entry")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_BYTES or (dtype == "I8") != (name == FLAT and SCALE in entries):
            raise _reject(f"{name}: dtype {str(dtype)[:20]!r} is not F16, BF16 or F32")
        if not (isinstance(shape, list) and len(shape) == 1 and _count(shape[0])):
            raise _reject(f"{name}: shape must be one positive length")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_offset, offsets))):
            raise _reject(f"{name}: malformed data offsets")
        begin, end = offsets
        if not 0 <= begin <= end <= buffer_len:
            raise _reject(f"{name}: data offsets outside the file")
        if end - begin != shape[0] * DTYPE_BYTES[dtype]:
            raise _reject(f"{name}: data size does not match dtype and shape")
        spans.append((begin, end))
        found[name] = (dtype, shape[0])
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise _reject("tensor data overlaps or leaves gaps")
        position = end
    if position != buffer_len:
        raise _reject("unexpected bytes after the tensor data")
    return found


def _count(value: Any) -> bool:
    return type(value) is int and 0 < value <= 1 << 24


def _offset(value: Any) -> bool:
    return type(value) is int and value >= 0


def _floats(dtype: str, raw: bytes) -> list[float]:
    if dtype == "F32":
        return [v for (v,) in struct.iter_unpack("<f", raw)]
    if dtype == "F16":
        return [v for (v,) in struct.iter_unpack("<e", raw)]
    # BF16 is the top half of an F32.
    return [
        v
        for (v,) in struct.iter_unpack(
            "<f", b"".join(b"\0\0" + raw[i : i + 2] for i in range(0, len(raw), 2))
        )
    ]


def _check_metadata(meta: Any) -> tuple[dict[str, str], tuple[tuple[str, int], ...]]:
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise _reject("metadata must map strings to strings")
    if meta.get("format") != FORMAT:
        raise _reject("not a Perfusion concept (format metadata missing)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise _reject(f"unsupported format version {meta.get('format_version', '')[:10]!r}")
    for key, max_chars in (("token", TOKEN_MAX_CHARS), ("superclass", SUPERCLASS_MAX_CHARS)):
        value = meta.get(key, "")
        if not 0 < len(value) <= max_chars or not value.isprintable():
            raise _reject(f"{key} must be 1–{max_chars} printable characters")
    if meta.get("architecture", "sd") not in ARCHITECTURES:
        raise _reject("unknown base architecture (expected sd or sdxl)")
    for key in ("default_beta", "default_tau", "i_star_energy"):
        try:
            number = float(meta.get(key, ""))
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise _reject(f"{key} must be a finite number")
    try:
        layers = json.loads(meta.get("layers", ""))
        pairs = tuple((str(n), int(d)) for n, d in layers if isinstance(n, str) and _count(d))
    except (ValueError, TypeError) as exc:
        raise _reject("malformed layer list") from exc
    if not 0 < len(pairs) == len(layers) <= MAX_LAYERS or len({n for n, _ in pairs}) != len(pairs):
        raise _reject("malformed layer list")
    if not all(LAYER_NAME.fullmatch(name) for name, _ in pairs):
        raise _reject("malformed layer name")
    return meta, pairs


def inspect_concept_file(
    data: bytes, expected: ConceptSchema | None = None, settings: Settings | None = None
) -> ConceptFileInfo:
    """Validate a concept file's bytes without executing or deserialising anything else."""
    settings = settings or get_settings()
    if len(data) > settings.concept_file_max_bytes:
        raise _reject(f"larger than {settings.concept_file_max_bytes:,} bytes", 413)
    header, start = _parse_header(data)
    meta, layers = _check_metadata(header.pop("__metadata__", None))
    tensors = _check_tensors(header, len(data) - start)
    dims = {tensors[name][1] for name in VECTORS}
    if len(dims) != 1 or not 0 < (dim := dims.pop()) <= MAX_DIM:
        raise _reject("token_embedding, i_star, e_super and score must share one length")
    if tensors[FLAT][1] != sum(width for _, width in layers):
        raise _reject("o_v does not match the layer list")
    blocks = sum(-(-width // QUANT_BLOCK) for _, width in layers)
    if SCALE in tensors and tensors[SCALE][1] != blocks:
        raise _reject("o_v_scale does not match the layer list")
    for name, entry in header.items():
        if entry["dtype"] == "I8":
            continue  # integers are finite
        begin, end = entry["data_offsets"]
        values = _floats(entry["dtype"], data[start + begin : start + end])
        if not all(math.isfinite(v) for v in values):
            raise _reject(f"{name} contains NaN or infinite values")
    schema = ConceptSchema(dim, layers)
    if expected is not None and schema != expected:
        raise ConceptFileRejected("this concept was made for a different base model")
    return ConceptFileInfo(
        token=meta["token"],
        superclass=meta["superclass"],
        base_model_id=meta.get("base_model_id", ""),
        base_fingerprint=meta.get("base_fingerprint", ""),
        schema=schema,
        metadata=meta,
        architecture=meta.get("architecture", "sd"),
    )


def training_settings(info: ConceptFileInfo) -> dict[str, Any]:
    """The fit settings recorded in the file, or {} when absent or unreadable."""
    try:
        training = json.loads(info.metadata.get("training") or "{}")
    except json.JSONDecodeError:
        return {}
    return training if isinstance(training, dict) else {}


def reference_file(session: Session, base_model: str) -> ConceptFileInfo | None:
    """The newest concept file *fitted here* on this base model (imports don't count, so a
    forged first import cannot become the yardstick); None before the first fit."""
    fitted = select(Job.concept_id).where(Job.kind == JobKind.fit, Job.state == JobState.succeeded)
    blob_id = session.scalar(
        select(Concept.file_blob_id)
        .where(
            Concept.base_model == base_model,
            Concept.file_blob_id.is_not(None),
            Concept.id.in_(fitted),
        )
        .order_by(Concept.updated_at.desc())
        .limit(1)
    )
    blob = session.get(Blob, blob_id) if blob_id else None
    if blob is None:
        return None
    try:
        return inspect_concept_file(blob.data, settings=Settings(concept_file_max_bytes=1 << 30))
    except ConceptFileRejected:
        return None
