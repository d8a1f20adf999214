"""The FitConfig a fit job runs with, built in one place for the fit handler and the warm-up."""

from __future__ import annotations

from typing import Any

from app.config import get_settings


def fit_config(pipe: Any, on_cuda: bool, steps: int, seed: int, **reporting: Any) -> Any:
    """The architecture's default batch (SDXL: 4 × 4 at 1024 px) unless the Settings set one,
    the learning rates, accumulation and restarts the base model's folder sets
    (`perfusion_fit.json`, the toy model's; a batch in the Settings still wins),
    preview and checkpoint intervals from the Settings; `reporting` overrides FitConfig fields
    (e.g. `progress_interval_s`). Returns a `workers.perfusion.FitConfig`."""
    import workers.perfusion as perfusion

    settings = get_settings()
    folder = perfusion.base_fit_defaults(pipe)
    batch, accum = perfusion.default_batch(perfusion.architecture(pipe), on_cuda)
    accum = int(folder.pop("grad_accum", accum))
    if settings.fit_batch_size:
        batch = settings.fit_batch_size
    if settings.fit_batch_size or settings.fit_grad_accum != 1:
        accum = settings.fit_grad_accum
    fields: dict[str, Any] = dict(
        steps=steps,
        batch_size=batch,
        grad_accum=accum,
        seed=seed,
        preview_every=settings.fit_preview_every,
        checkpoint_every=settings.fit_checkpoint_every,
    )
    fields.update(folder)
    fields.update(reporting)
    return perfusion.FitConfig(**fields)
