"""The per-base-model covariance C of text-encoder outputs and its regularised inverse."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from .pipeline import base_model_id, model_fingerprint
from .sides import text_side

DEFAULT_CAPTIONS = Path(__file__).resolve().parent / "data" / "captions.txt"
DEFAULT_RIDGE = 1e-3


@dataclass
class Covariance:
    """(C + λI)⁻¹ of one base model; `fingerprint` identifies it in concept files."""

    inverse: torch.Tensor  # (D, D) float32
    fingerprint: str
    n_tokens: int
    ridge: float = DEFAULT_RIDGE
    base_fingerprint: str = ""  # model_fingerprint of the base it was computed on


def covariance_fingerprint(base_fingerprint: str, captions: list[str], ridge: float) -> str:
    """Identity of a covariance: base model, caption set and ridge."""
    digest = hashlib.sha256(base_fingerprint.encode())
    digest.update("\n".join(captions).encode())
    digest.update(repr(float(ridge)).encode())
    return digest.hexdigest()


def regularised_inverse(second_moment: torch.Tensor, ridge: float) -> torch.Tensor:
    """(C + λI)⁻¹ with λ = ridge · trace(C) / D, so the ridge is relative to C's scale."""
    c = second_moment.double()
    dim = c.shape[0]
    lam = ridge * torch.trace(c) / dim
    return torch.linalg.inv(c + lam * torch.eye(dim, dtype=c.dtype)).float()


@torch.no_grad()
def compute_covariance(
    pipe: StableDiffusionPipeline,
    captions: list[str],
    ridge: float = DEFAULT_RIDGE,
    batch_size: int = 64,
    progress: bool = False,
) -> Covariance:
    """Uncentered covariance of text-encoder outputs over `captions`, inverted with a ridge.

    Counted positions are BOS, the caption's tokens and the first EOS (attention mask = 1);
    padding is excluded. BOS is included because it is part of every prompt the UNet sees: it is
    a large, constant vector, and whitening it away keeps s(e) small on it. The vectors are the
    text side's (SDXL: both encoders' penultimate states concatenated, 2048-d).
    """
    if not captions:
        raise ValueError("need at least one caption")
    text = text_side(pipe)
    dim = text.dim
    total = torch.zeros(dim, dim, dtype=torch.float64)
    count = 0
    batches = range(0, len(captions), batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="covariance", unit="batch")
    for start in batches:
        tokens = text.tokenize(captions[start : start + batch_size])
        enc = text.encode(tokens).to("cpu", torch.float64)
        keep = tokens.mask
        rows = enc[keep]  # (n, D) non-padding positions only
        total += rows.T @ rows
        count += rows.shape[0]
    inverse = regularised_inverse(total / count, ridge)
    base = model_fingerprint(pipe)
    fingerprint = covariance_fingerprint(base, captions, ridge)
    return Covariance(inverse, fingerprint, n_tokens=count, ridge=ridge, base_fingerprint=base)


def read_captions(path: Path = DEFAULT_CAPTIONS) -> list[str]:
    """Non-empty lines of a caption file."""
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def default_cache_dir() -> Path:
    """PERFUSION_CACHE, else ~/.cache/perfusion."""
    return Path(os.environ.get("PERFUSION_CACHE", Path.home() / ".cache" / "perfusion"))


def save_covariance(cov: Covariance, path: Path) -> None:
    """Write a covariance to a safetensors file."""
    meta = {
        "fingerprint": cov.fingerprint,
        "n_tokens": str(cov.n_tokens),
        "ridge": repr(cov.ridge),
        "base_fingerprint": cov.base_fingerprint,
    }
    save_file({"inverse": cov.inverse.contiguous()}, str(path), metadata=meta)


def load_covariance(path: Path) -> Covariance:
    """Read a covariance written by `save_covariance`."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    return Covariance(
        inverse=tensors["inverse"],
        fingerprint=meta["fingerprint"],
        n_tokens=int(meta["n_tokens"]),
        ridge=float(meta["ridge"]),
        base_fingerprint=meta.get("base_fingerprint", ""),
    )


def model_captions(pipe: StableDiffusionPipeline) -> list[str] | None:
    """The `captions.txt` a local base-model folder ships, if any."""
    path = Path(base_model_id(pipe)) / "captions.txt"
    return read_captions(path) if path.is_file() else None


def get_covariance(
    pipe: StableDiffusionPipeline,
    captions: list[str] | None = None,
    cache_dir: Path | None = None,
    ridge: float = DEFAULT_RIDGE,
    progress: bool = False,
) -> Covariance:
    """The covariance for this base model, computed once and cached in `cache_dir`.

    The cache file is keyed by the covariance fingerprint (base model, captions, ridge).
    Captions default to the base model folder's own `captions.txt` (a model can ship the
    caption distribution it was trained on), else the bundled `data/captions.txt`.
    """
    if captions is None:
        captions = model_captions(pipe) or read_captions()
    fingerprint = covariance_fingerprint(model_fingerprint(pipe), captions, ridge)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"covariance-{fingerprint[:32]}.safetensors"
    if path.exists():
        cov = load_covariance(path)
        if cov.fingerprint == fingerprint:
            return cov
    cov = compute_covariance(pipe, captions, ridge=ridge, progress=progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_covariance(cov, tmp)
    tmp.replace(path)
    return cov
