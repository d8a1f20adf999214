"""Optional `torch.compile` of a base model's UNet, for a process that keeps the model loaded.

The Perfusion processors on the attn2 layers are swapped for every fit and generation, so
they stay eager; what is the same in every job is compiled block by block ("regional"
compilation): each ResNet block, each transformer block's self-attention and feed-forward.
Blocks share their Python code, so one compile serves all blocks of a shape, module names
and state-dict keys stay as they were (fingerprints, processors and concept files are
unaffected), and `uncompile_unet` undoes it.

A compile takes minutes on a GPU, so it must not land inside someone's fit: `warm_up` runs
a short fit and generations at the shapes a worker uses, once per base model at worker
start; later jobs with those shapes reuse the compiled code. Inductor's on-disk caches
(`TORCHINDUCTOR_CACHE_DIR`, set by the worker) make a restarted worker's warm-up fast.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from PIL import Image
from torch import nn

from .covariance import Covariance
from .fit import FitConfig, fit_concept
from .generate import generate

# Every block instance of one Python class is one compiled function with a cache entry per
# (shape, dtype, grad mode); SD 1.5 has ~10 ResNet shapes, each seen training and denoising.
RECOMPILE_LIMIT = 64


def _blocks(unet: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in unet.modules()
        if isinstance(m, ResnetBlock2D | FeedForward)
        or (isinstance(m, Attention) and not m.is_cross_attention)
    ]


def compile_unet(
    unet: nn.Module, backend: str = "inductor", mode: str | None = None, dynamic: bool | None = None
) -> int:
    """Compile the UNet's fixed blocks in place; returns how many. Idempotent."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    blocks = _blocks(unet)
    for block in blocks:
        if getattr(block, "_compiled_call_impl", None) is None:
            block.compile(backend=backend, mode=mode, dynamic=dynamic)
    unet._perfusion_compiled = backend  # type: ignore[assignment]
    return len(blocks)


def uncompile_unet(unet: nn.Module) -> None:
    """Back to eager blocks (the compiled code stays in torch's caches)."""
    for block in _blocks(unet):
        block._compiled_call_impl = None
    unet._perfusion_compiled = None  # type: ignore[assignment]


def is_compiled(unet: nn.Module) -> bool:
    return getattr(unet, "_perfusion_compiled", None) is not None


def warm_up(
    pipe: Any,
    covariance: Covariance,
    config: FitConfig,
    superclass: str,
    sample_steps: int = 2,
    sizes: tuple[int, ...] = (1, 2),
) -> None:
    """Run the shapes a worker's jobs will: a 2-step fit with `config`'s batch, resolution and
    options, then generations of each image count in `sizes` (and one with the concept)."""
    resolution = config.resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    rng = np.random.default_rng(0)
    photos = [
        Image.fromarray(rng.integers(0, 255, (resolution, resolution, 3), dtype=np.uint8))
        for _ in range(2)
    ]
    warm = replace(config, steps=2, preview_every=0, checkpoint_every=0)
    concept = fit_concept(pipe, photos, "<warm-up>", superclass, warm, covariance)
    for n in sizes:
        generate(pipe, f"a photo of a {superclass}", steps=sample_steps, seed=0, n=n)
    generate(pipe, "a photo of a <warm-up>", [concept], steps=sample_steps, seed=0)
