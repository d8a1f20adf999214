"""The worker's fit settings: the Settings turned into the library's FitConfig."""

from __future__ import annotations

from typing import Any

from app.config import get_settings


def fit_config(architecture: str, on_cuda: bool, steps: int, seed: int) -> Any:
    """The worker's FitConfig: the library's defaults with the Settings' batch and options."""
    import workers.perfusion as perfusion

    settings = get_settings()
    batch, accum = perfusion.default_batch(architecture, on_cuda)  # SDXL: 4 x 4 at 1024 px
    if settings.fit_batch_size:
        batch = settings.fit_batch_size
    if settings.fit_batch_size or settings.fit_grad_accum != 1:
        accum = settings.fit_grad_accum
    return perfusion.FitConfig(
        steps=steps,
        batch_size=batch,
        grad_accum=accum,
        seed=seed,
        preview_every=settings.fit_preview_every,
        checkpoint_every=settings.fit_checkpoint_every,
        progress_interval_s=settings.fit_progress_interval_s,
        channels_last=settings.fit_channels_last,
        frozen_dtype=settings.fit_frozen_dtype,
        fused_adamw=settings.fit_fused_adamw,
    )
