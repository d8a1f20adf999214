"""A trained concept, its safetensors file format and its compatibility checks."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .pipeline import cross_attention_layers, model_fingerprint
from .sides import text_side
from .text import ARCH_NAMES, ARCH_SD

FORMAT = "perfusion-concept"
FORMAT_VERSION = 1
VECTORS = ("token_embedding", "i_star", "e_super", "score")
QUANT_BLOCK = 64
"""o_v stored as int8 (dtype=torch.int8): one fp16 scale per block of 64 values of a layer."""
# Reversible short forms of diffusers module-name parts (diffusers names have no capitals);
# they keep 16 SD 1.5 layer names to ~100 bytes of metadata instead of ~900.
ABBREVIATIONS = (
    ("down_blocks.", "D"),
    ("up_blocks.", "U"),
    ("mid_block.", "M"),
    ("attentions.", "A"),
    ("transformer_blocks.", "T"),
    ("attn2", "X"),
)


def _abbreviate(name: str) -> str:
    for long, short in ABBREVIATIONS:
        name = name.replace(long, short)
    return name


def _expand(name: str) -> str:
    for long, short in reversed(ABBREVIATIONS):
        name = name.replace(short, long)
    return name


class ConceptMismatch(Exception):
    """The concept does not fit this base model (fingerprint, layer names or shapes)."""


class ConceptFormatError(ValueError):
    """The data is not a Perfusion concept file (e.g. a pickle, or a foreign safetensors file)."""


@dataclass
class Concept:
    """Everything a concept adds to a base model.

    `score` is P i* / (i*ᵀ P i*) with P = (C + λI)⁻¹, so s(e) = eᵀ score, and `i_star_energy`
    is i*ᵀ P i*: together they replace C in the file. `o_k` (W_k e_super per layer) is not stored;
    it is empty after loading and recomputed from `e_super` when the concept is applied.
    D is the width the attn2 layers see (SDXL: 2048, both encoders concatenated); for SDXL
    `token_embedding` is the token's CLIP-L row (768) followed by its bigG row (1280).
    """

    token: str
    superclass: str
    token_embedding: torch.Tensor  # (D,) input word embedding of the new token
    i_star: torch.Tensor  # (D,)
    e_super: torch.Tensor  # (D,) superclass encoding
    o_k: dict[str, torch.Tensor]  # layer name -> (out_k,) locked key targets
    o_v: dict[str, torch.Tensor]  # layer name -> (out_v,) trained value targets
    score: torch.Tensor  # (D,)
    i_star_energy: float
    default_beta: float = 0.7
    default_tau: float = 0.15
    base_fingerprint: str = ""
    covariance_fingerprint: str = ""
    base_model_id: str = ""
    training: dict = field(default_factory=dict)
    architecture: str = ARCH_SD
    """`sd` (SD 1.x/2.x) or `sdxl`; files without the field are SD (they predate SDXL)."""


def _metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ConceptFormatError("not a safetensors file (too short)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8 or header_len > 10_000_000:
        raise ConceptFormatError("not a safetensors file (bad header length)")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConceptFormatError("not a safetensors file (header is not JSON)") from exc
    if not isinstance(header, dict):
        raise ConceptFormatError("not a safetensors file (header is not an object)")
    return header.get("__metadata__") or {}


def quantize_blocks(vectors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer, blocks of QUANT_BLOCK values: int8 codes and fp16 scales (absmax / 127).

    The scale is rounded to fp16 before coding, so dequantising and quantising again
    reproduces the same codes and scales (re-saving is lossless).
    """
    codes, scales = [], []
    for vector in vectors:
        for block in vector.detach().float().cpu().reshape(-1).split(QUANT_BLOCK):
            scale = (block.abs().max() / 127).half().float()
            scale = scale if scale > 0 else torch.ones(())
            codes.append(torch.round(block / scale).clamp(-127, 127).to(torch.int8))
            scales.append(scale.half())
    return torch.cat(codes), torch.stack(scales)


def dequantize_blocks(codes: torch.Tensor, scales: torch.Tensor, widths: list[int]) -> torch.Tensor:
    """Inverse of `quantize_blocks` (float32, flat)."""
    counts = [len(range(0, w, QUANT_BLOCK)) for w in widths]
    if codes.numel() != sum(widths) or scales.numel() != sum(counts):
        raise ConceptMismatch("o_v_scale does not match the layer list")
    per_value = torch.cat(
        [
            s.repeat_interleave(QUANT_BLOCK)[:w]
            for s, w in zip(scales.float().split(counts), widths, strict=True)
        ]
    )
    return codes.float() * per_value


def default_storage(architecture: str) -> torch.dtype:
    """The file precision a concept is written in unless asked otherwise: fp16 for SD 1.x/2.x
    (about 32 KiB), int8 o_v for SDXL, whose 70 layers' o*_V alone are 162.5 KiB in fp16 (the
    file 181 KiB; int8 102 KiB, generated images within 2/255 of the fp32 concept's)."""
    return torch.int8 if architecture == "sdxl" else torch.float16


def concept_to_bytes(concept: Concept, dtype: torch.dtype | None = None) -> bytes:
    """Serialise to safetensors: five flat tensors plus string metadata (no o*_K, no pickle).

    dtype float16, bfloat16 or float32 for every tensor; torch.int8 stores o_v as block-scaled
    int8 (plus `o_v_scale`) and the vectors in fp16: about 0.5 % rms error on o_v (fp16:
    0.03 %, bf16: 0.2 %), about half the bytes. None: `default_storage` of its architecture.
    """
    if dtype is None:
        dtype = default_storage(concept.architecture)
    layers = list(concept.o_v)
    short = all(_expand(_abbreviate(n)) == n for n in layers)
    names = [_abbreviate(n) for n in layers] if short else layers
    vector_dtype = torch.float16 if dtype == torch.int8 else dtype
    tensors = {name: getattr(concept, name).detach().to("cpu", vector_dtype) for name in VECTORS}
    if dtype == torch.int8:
        tensors["o_v"], tensors["o_v_scale"] = quantize_blocks([concept.o_v[n] for n in layers])
    else:
        flat = torch.cat([concept.o_v[n].detach().reshape(-1).cpu() for n in layers])
        tensors["o_v"] = flat.to(dtype)
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "token": concept.token,
        "superclass": concept.superclass,
        "base_model_id": concept.base_model_id,
        "architecture": concept.architecture,
        "base_fingerprint": concept.base_fingerprint,
        "covariance_fingerprint": concept.covariance_fingerprint,
        "default_beta": repr(float(concept.default_beta)),
        "default_tau": repr(float(concept.default_tau)),
        "i_star_energy": repr(float(concept.i_star_energy)),
        "layer_names": "abbreviated" if short else "full",
        "layers": json.dumps(
            [[name, concept.o_v[n].numel()] for name, n in zip(names, layers, strict=True)],
            separators=(",", ":"),
        ),
        "training": json.dumps(concept.training, separators=(",", ":"), sort_keys=True),
    }
    return save_safetensors({k: v.contiguous() for k, v in tensors.items()}, metadata=meta)


def concept_from_bytes(data: bytes) -> Concept:
    """Parse a concept file; raises ConceptFormatError or ConceptMismatch (inconsistent shapes)."""
    meta = _metadata(data)
    if meta.get("format") != FORMAT:
        raise ConceptFormatError("not a Perfusion concept file (missing format metadata)")
    if int(meta.get("format_version", "0")) != FORMAT_VERSION:
        raise ConceptFormatError(f"unsupported concept format version {meta['format_version']}")
    try:
        tensors = load_safetensors(data)
        layers = [(str(n), int(d)) for n, d in json.loads(meta["layers"])]
        if meta.get("layer_names") == "abbreviated":
            layers = [(_expand(n), d) for n, d in layers]
        training = json.loads(meta["training"])
    except Exception as exc:  # any parse failure means a damaged file
        raise ConceptFormatError(f"damaged concept file: {exc}") from exc
    arch = meta.get("architecture", ARCH_SD)
    if arch not in ARCH_NAMES:
        raise ConceptFormatError(f"unknown base architecture {arch[:20]!r}")
    missing = {*VECTORS, "o_v"} - tensors.keys()
    if missing:
        raise ConceptMismatch(f"concept file lacks tensors {sorted(missing)}")
    dims = {tensors[n].shape for n in VECTORS}
    if len(dims) != 1 or len(next(iter(dims))) != 1:
        raise ConceptMismatch(f"concept vectors have inconsistent shapes {sorted(dims)}")
    flat = tensors["o_v"].float()
    if flat.ndim == 1 and flat.numel() == sum(d for _, d in layers) and "o_v_scale" in tensors:
        flat = dequantize_blocks(tensors["o_v"], tensors["o_v_scale"], [d for _, d in layers])
    elif tensors["o_v"].dtype == torch.int8:
        raise ConceptMismatch("an int8 o_v needs its o_v_scale")
    if flat.ndim != 1 or flat.numel() != sum(d for _, d in layers):
        raise ConceptMismatch(
            f"o_v has {flat.numel()} values but the layer list needs {sum(d for _, d in layers)}"
        )
    o_v = dict(zip([n for n, _ in layers], flat.split([d for _, d in layers]), strict=True))
    return Concept(
        token=meta["token"],
        superclass=meta["superclass"],
        token_embedding=tensors["token_embedding"].float(),
        i_star=tensors["i_star"].float(),
        e_super=tensors["e_super"].float(),
        o_k={},
        o_v={n: v.clone() for n, v in o_v.items()},
        score=tensors["score"].float(),
        i_star_energy=float(meta["i_star_energy"]),
        default_beta=float(meta["default_beta"]),
        default_tau=float(meta["default_tau"]),
        base_fingerprint=meta["base_fingerprint"],
        covariance_fingerprint=meta["covariance_fingerprint"],
        base_model_id=meta["base_model_id"],
        training=training,
        architecture=arch,
    )


def save_concept(concept: Concept, path: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write a concept file (dtype None: `default_storage` of its architecture)."""
    Path(path).write_bytes(concept_to_bytes(concept, dtype))


def load_concept(path: str | Path) -> Concept:
    """Read a concept file."""
    return concept_from_bytes(Path(path).read_bytes())


def validate_concept(concept: Concept, pipe: StableDiffusionPipeline) -> None:
    """Check architecture, base fingerprint, layer names, dtypes and shapes against the pipeline."""
    text = text_side(pipe)
    if concept.architecture != text.arch:
        raise ConceptMismatch(
            f"concept {concept.token!r} was made for {ARCH_NAMES.get(concept.architecture, '?')} "
            f"({concept.base_model_id or 'unknown base'}), but this pipeline is "
            f"{ARCH_NAMES[text.arch]}: load it into a {ARCH_NAMES.get(concept.architecture, '?')} "
            "base model"
        )
    fingerprint = model_fingerprint(pipe)
    if concept.base_fingerprint != fingerprint:
        raise ConceptMismatch(
            f"concept {concept.token!r} was trained on base model "
            f"{concept.base_model_id or '?'} (fingerprint {concept.base_fingerprint[:12]}), "
            f"but this pipeline's base has fingerprint {fingerprint[:12]}"
        )
    dim = text.dim
    for name in VECTORS:
        tensor = getattr(concept, name)
        if not tensor.is_floating_point() or tuple(tensor.shape) != (dim,):
            raise ConceptMismatch(
                f"{name} has shape {tuple(tensor.shape)} ({tensor.dtype}), expected ({dim},) float"
            )
    layers = cross_attention_layers(pipe.unet)
    if set(concept.o_v) != set(layers):
        raise ConceptMismatch(
            f"concept layers do not match the UNet's cross-attention layers: "
            f"missing {sorted(set(layers) - set(concept.o_v))[:3]}, "
            f"unknown {sorted(set(concept.o_v) - set(layers))[:3]}"
        )
    for name, attn in layers.items():
        for targets, linear, kind in (
            (concept.o_v, attn.to_v, "o_v"),
            (concept.o_k, attn.to_k, "o_k"),
        ):
            if name not in targets and kind == "o_k":
                continue
            tensor = targets[name]
            if not tensor.is_floating_point() or tuple(tensor.shape) != (linear.out_features,):
                raise ConceptMismatch(
                    f"{kind}[{name}] has shape {tuple(tensor.shape)}, "
                    f"expected ({linear.out_features},)"
                )
            if linear.in_features != dim:
                raise ConceptMismatch(f"{name} expects {linear.in_features}-d text, not {dim}")
