"""Imported concept files: well-formed ones pass; pickles, zips and forged headers never run."""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from app.concepts.filecheck import (
    ConceptFileRejected,
    ConceptSchema,
    inspect_concept_file,
)
from app.config import Settings
from tests.support.conceptfiles import META, build, f32


def rejected(data: bytes, status: int = 422, **kwargs: Any) -> str:
    with pytest.raises(ConceptFileRejected) as exc:
        inspect_concept_file(data, settings=Settings(), **kwargs)
    assert exc.value.status_code == status, exc.value
    return str(exc.value)


def test_a_well_formed_concept_passes_and_is_described() -> None:
    info = inspect_concept_file(build(), settings=Settings())
    assert (info.token, info.superclass, info.base_model_id) == ("<rex>", "dog", "toyworld")
    assert info.schema == ConceptSchema(4, (("down.attn2", 8), ("up.attn2", 6)))
    inspect_concept_file(build(), expected=info.schema, settings=Settings())


def test_files_written_by_the_safetensors_library_pass() -> None:
    np = pytest.importorskip("numpy")  # installed with the worker extra, as in CI
    from safetensors.numpy import save

    arrays = {
        n: np.full(4, 0.5, dtype=np.float16)
        for n in ("token_embedding", "i_star", "e_super", "score")
    }
    arrays["o_v"] = np.zeros(14, dtype=np.float32)
    assert inspect_concept_file(save(arrays, metadata=META), settings=Settings()).schema.dim == 4


class Exploit:
    """Unpickling this creates a marker file: proof that the bytes were executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_pickles_and_torch_zips_are_refused_without_being_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for protocol in (0, 2, 5):
        payload = pickle.dumps(Exploit(marker), protocol=protocol)
        message = rejected(payload, 415)
        assert "pickle" in message or "header length" in message
    archive = BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:  # the layout of torch.save's .pt files
        zf.writestr("archive/data.pkl", pickle.dumps(Exploit(marker)))
    assert "zip" in rejected(archive.getvalue(), 415)
    pickle.loads(pickle.dumps(Exploit(tmp_path / "control"), protocol=2))
    assert (tmp_path / "control").exists()  # the exploit is real...
    assert not marker.exists()  # ...and the checker never ran it


def shapes(**overrides: tuple[str, list[int], bytes]) -> dict[str, tuple[str, list[int], bytes]]:
    tensors = {
        n: ("F32", [4], f32([1, 2, 3, 4]))
        for n in ("token_embedding", "i_star", "e_super", "score")
    }
    tensors["o_v"] = ("F32", [14], f32([0] * 14))
    tensors.update(overrides)
    return tensors


FORGED = {
    "header longer than file": struct.pack("<Q", 10_000) + b'{"a": 1}',
    "header length 2^64-1": b"\xff" * 8 + b"{}",
    "header not JSON": struct.pack("<Q", 4) + b"{{{{",
    "duplicate keys": struct.pack("<Q", 16) + b'{"a": 1, "a": 2}',
    "too short": b"\x01\x00",
    "unknown dtype": build(shapes(score=("I64", [4], b"\0" * 32))),
    "exotic dtype": build(shapes(score=("F8_E4M3", [4], b"\0" * 4))),
    "2-D shape": build(shapes(score=("F32", [2, 2], f32([1, 2, 3, 4])))),
    "mismatched D": build(shapes(score=("F32", [5], f32([1, 2, 3, 4, 5])))),
    "o_v vs layers": build(shapes(o_v=("F32", [13], f32([0] * 13)))),
    "extra tensor": build(shapes(evil=("F32", [1], f32([1])))),
    "missing tensor": build({k: v for k, v in shapes().items() if k != "score"}),
    "NaN values": build(shapes(i_star=("F32", [4], f32([1, float("nan"), 3, 4])))),
    "offsets past end": build(
        header_extra={"score": {"dtype": "F32", "shape": [4], "data_offsets": [112, 999]}}
    ),
    "overlapping offsets": build(
        header_extra={"score": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    ),
    "trailing bytes": build() + b"#!/bin/sh\n",
    "no metadata": build(meta={}),
    "foreign format": build(meta={**META, "format": "lora"}),
    "newer version": build(meta={**META, "format_version": "9"}),
    "bad layer list": build(meta={**META, "layers": '[["a", -1]]'}),
    "nan energy": build(meta={**META, "i_star_energy": "nan"}),
    "long token": build(meta={**META, "token": "x" * 41}),
}


@pytest.mark.parametrize("name", list(FORGED))
def test_forged_files_are_refused(name: str) -> None:
    rejected(FORGED[name], 415 if "header" in name or name == "too short" else 422)


def test_size_and_base_model_bounds() -> None:
    with pytest.raises(ConceptFileRejected) as exc:
        inspect_concept_file(build(), settings=Settings(concept_file_max_bytes=100))
    assert exc.value.status_code == 413
    other = ConceptSchema(4, (("down.attn2", 8), ("mid.attn2", 6)))
    assert "different base model" in rejected(build(), 422, expected=other)


@pytest.mark.parametrize(
    "layers",
    [
        {"down_blocks.0.attentions.0.transformer_blocks.0.attn2": 8, "mid_block.attn2": 6},
        {"custom.layer": 8, "other-layer": 6},  # names the library keeps unabbreviated
    ],
)
def test_files_the_perfusion_library_writes_pass(layers: dict[str, int]) -> None:
    """Contract with workers/perfusion: what concept_to_bytes writes, the web accepts."""
    import torch

    from workers.perfusion.concept import Concept, concept_to_bytes

    vec = torch.linspace(-1, 1, 4)
    concept = Concept(
        token="<rex>", superclass="dog", token_embedding=vec, i_star=vec, e_super=vec, o_k={},
        o_v={name: torch.ones(width) for name, width in layers.items()}, score=vec,
        i_star_energy=2.0, base_model_id="toy", base_fingerprint="f", training={"steps": 3},
    )  # fmt: skip
    info = inspect_concept_file(concept_to_bytes(concept), settings=Settings())
    assert info.schema.dim == 4 and [w for _, w in info.schema.layers] == [8, 6]
    assert info.token == "<rex>" and info.base_fingerprint == "f"


def test_the_base_architecture_is_read_and_unknown_ones_are_refused() -> None:
    import uuid

    from app.concepts.models import Concept
    from app.concepts.views import concept_architecture

    assert inspect_concept_file(build(), settings=Settings()).architecture == "sd"  # pre-SDXL
    xl = inspect_concept_file(build(meta={**META, "architecture": "sdxl"}), settings=Settings())
    assert xl.architecture == "sdxl"
    assert "architecture" in rejected(build(meta={**META, "architecture": "sd3"}))
    assert concept_architecture(Concept(settings={"architecture": "sdxl"})) == "sdxl"
    assert concept_architecture(Concept(settings={}, file_blob_id=uuid.uuid4())) == "sd"
    assert concept_architecture(Concept(settings={})) is None  # first fit still running


def test_int8_files_the_library_writes_pass_and_forged_scales_are_refused() -> None:
    import torch
    from safetensors.torch import load, save

    from workers.perfusion.concept import Concept, concept_to_bytes

    vec = torch.linspace(-1, 1, 4)
    concept = Concept(
        token="<rex>", superclass="dog", token_embedding=vec, i_star=vec, e_super=vec, o_k={},
        o_v={"down.attn2": torch.linspace(-2, 2, 70), "up.attn2": torch.ones(6)}, score=vec,
        i_star_energy=2.0, base_model_id="toy", base_fingerprint="f", architecture="sdxl",
    )  # fmt: skip
    data = concept_to_bytes(concept, dtype=torch.int8)
    info = inspect_concept_file(data, settings=Settings())
    assert info.architecture == "sdxl" and [w for _, w in info.schema.layers] == [70, 6]
    meta = dict(info.metadata)
    tensors = load(data)
    assert tensors["o_v"].dtype == torch.int8 and tensors["o_v_scale"].numel() == 2 + 1
    no_scale = {k: v for k, v in tensors.items() if k != "o_v_scale"}
    assert "dtype" in rejected(save(no_scale, metadata=meta))
    short = dict(tensors, o_v_scale=tensors["o_v_scale"][:2].clone())
    assert "o_v_scale" in rejected(save(short, metadata=meta))
    as_float = dict(tensors, o_v=tensors["o_v"].half())
    assert "dtype" in rejected(save(as_float, metadata=meta))
