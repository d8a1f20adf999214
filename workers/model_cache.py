"""Base models a worker process keeps loaded: loaded once, reused by every job, LRU by count.

Concepts are applied to and removed from a cached pipeline per job, never baked in, so the
base model stays unchanged and is never reloaded for a new concept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from app.config import get_settings

log = logging.getLogger(__name__)


@dataclass
class CachedModel:
    base: str
    pipe: Any
    """A diffusers StableDiffusionPipeline."""
    load_s: float
    covariance: Any | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """Held while a job uses the pipeline (concept processors are per-pipeline state)."""


def resolve_device(setting: str) -> str:
    """`auto` means the GPU when there is one."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_pipeline(base: str, device: str) -> Any:
    from workers.perfusion import load_pipeline

    return load_pipeline(base, device=device)


class ModelCache:
    """LRU cache of loaded base models for one worker process."""

    def __init__(
        self, size: int, device: str, loader: Callable[[str, str], Any] = _load_pipeline
    ) -> None:
        self.size = max(1, size)
        self.device = device
        self._loader = loader
        self._models: OrderedDict[str, CachedModel] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        """Base-model loads since this process started (a warm worker does not add to it)."""
        self.hits = 0

    def get(self, base: str) -> CachedModel:
        """The loaded model for `base`, loading it (and evicting the least used) if needed."""
        with self._lock:
            cached = self._models.get(base)
            if cached is not None:
                self._models.move_to_end(base)
                self.hits += 1
                return cached
            started = time.monotonic()
            pipe = self._loader(base, self.device)
            cached = CachedModel(base=base, pipe=pipe, load_s=time.monotonic() - started)
            self.loads += 1
            self._models[base] = cached
            while len(self._models) > self.size:
                evicted, _ = self._models.popitem(last=False)
                log.info("evicted base model %s from the cache", evicted)
                _free_gpu_memory()
            log.info("loaded base model %s on %s in %.2fs", base, self.device, cached.load_s)
            return cached

    def covariance(self, model: CachedModel) -> Any:
        """The model's text-embedding covariance (computed once, cached on disk)."""
        if model.covariance is None:
            from workers.perfusion import get_covariance

            settings = get_settings()
            captions = None
            if settings.covariance_captions is not None:
                lines = settings.covariance_captions.read_text().splitlines()
                captions = [line.strip() for line in lines if line.strip()]
            cache_dir = settings.data_dir / "cache" / "covariance"
            model.covariance = get_covariance(model.pipe, captions=captions, cache_dir=cache_dir)
        return model.covariance

    def warm(self, base: str) -> CachedModel:
        """Load `base` and its covariance now (at worker start), then make its first calls
        (`first_calls`), so that the first job waits for none of it; a job that arrives
        meanwhile waits on the same locks."""
        model = self.get(base)
        with model.lock:
            first_calls(model.pipe, self.covariance(model), self.device.startswith("cuda"))
        return model

    def stats(self, model: CachedModel) -> dict[str, Any]:
        """What a job result records about the cache (tests assert warm workers reuse it)."""
        return {
            "model_loads": self.loads,
            "model_cache_hits": self.hits,
            "model_load_s": round(model.load_s, 3),
            "device": self.device,
        }


def first_calls(pipe: Any, covariance: Any, on_cuda: bool) -> None:
    """A 2-step fit at the fit jobs' batch and size, and a 2-step generation, both thrown
    away. A process's first fit pays once for its kernels' setup (oneDNN primitives per
    shape on a CPU, kernel loading and autotuning on a GPU): on the toy-world model on a
    2-core CPU the first 80-step fit took 9.1 s and the next 7.9 s; after this, 7.0 s."""
    from PIL import Image

    import workers.perfusion as perfusion
    from workers.fit_config import fit_config

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    photo = Image.new("RGB", (size, size), (127, 127, 127))
    config = fit_config(pipe, on_cuda, steps=2, seed=0, preview_every=0, checkpoint_every=0)
    perfusion.fit_concept(pipe, [photo], "<warm-up>", "photo", config, covariance)
    perfusion.generate(pipe, "a photo", steps=2, n=1, seed=0)


def _free_gpu_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@lru_cache
def get_model_cache() -> ModelCache:
    """This process's cache, sized and placed by the Settings."""
    settings = get_settings()
    return ModelCache(settings.model_cache_size, resolve_device(settings.device))


def warm_in_background() -> threading.Thread | None:
    """Warm this process's cache with the configured base model on a daemon thread (unless
    `worker_warm_start` is off); a failure is logged, and the first job reports it."""
    settings = get_settings()
    if not settings.worker_warm_start:
        return None

    def warm() -> None:
        started = time.monotonic()
        try:
            get_model_cache().warm(settings.base_model)
        except Exception:
            log.warning("could not warm base model %s", settings.base_model, exc_info=True)
            return
        log.info(
            "warm: %s and its covariance in %.2fs", settings.base_model, time.monotonic() - started
        )

    thread = threading.Thread(target=warm, name="warm-base-model", daemon=True)
    thread.start()
    return thread
