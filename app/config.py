"""The one place configuration lives: `Settings`, read from `STUDIO_*` environment variables."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
TOYWORLD_MODEL = REPO_ROOT / "workers" / "toyworld" / "model"


class Settings(BaseSettings):
    """Perfusion Studio settings. Embedded defaults need no services at all."""

    model_config = SettingsConfigDict(env_prefix="STUDIO_", env_file=".env", extra="ignore")

    env: Literal["embedded", "production"] = "embedded"
    data_dir: Path = Path("var")
    database_url: str = ""
    """SQLAlchemy URL; empty = SQLite file `<data_dir>/studio.db`."""
    redis_url: str = ""
    """Broker and progress bus; empty = embedded (in-memory transport, in-process worker)."""
    base_model: str = str(TOYWORLD_MODEL)
    """Local diffusers folder or Hugging Face id of the base model workers load."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    secret_key: SecretStr | None = None
    """Signs sessions. Embedded: generated once and kept in `<data_dir>/secret_key`."""
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""
    """Origin people reach the app at (for share links and Origin checks); empty = host:port."""
    worker_concurrency: int = 1
    web_workers: int | None = None
    """Web server processes `serve` starts; unset = one per CPU core in production, 1 in the
    embedded default (its worker, SQLite writer and read-cache version live in that process)."""
    job_max_attempts: int = 3
    fit_steps: int | None = None
    """Optimisation steps of a fit; unset = 400 in production (GPU), 80 embedded (CPU)."""

    # Hostile-input bounds (app/uploads, app/concepts/files, app/security/ratelimit).
    upload_max_files: int = 20
    upload_max_file_bytes: int = 10 * 1024 * 1024
    upload_max_total_bytes: int = 60 * 1024 * 1024
    request_max_body_bytes: int = 1024 * 1024
    """Every other request body (JSON, forms); upload routes get the upload limits above."""
    image_max_pixels: int = 40_000_000
    image_min_side: int = 32
    image_store_max_side: int = 2048
    """Stored photos are downscaled to at most this many pixels on their longest side."""
    concept_file_max_bytes: int = 1024 * 1024
    auth_attempts_per_window: int = 10
    """Sign-in / sign-up attempts per client IP and username per `auth_window_s`."""
    auth_window_s: int = 300
    fits_per_hour: int = 10
    generations_per_hour: int = 120
    max_active_jobs: int = 8
    """Queued plus running jobs one person may have at once."""

    # --- Jobs and workers (reliability knobs; tests shorten the intervals) ---
    model_cache_size: int = 1
    worker_warm_start: bool = True
    """Load the base model and its text covariance when a worker starts, not on its first
    job: the first fit of a fresh studio waits for neither."""
    """Base models a worker process keeps loaded (LRU by count)."""
    fit_batch_size: int | None = None
    """Images per forward pass; unset = 16 on CUDA (the effective batch of 16 in one pass, 3.5x
    faster than 4 x 4 accumulation on an H200, docs/benchmarks.md), 4 on CPU."""
    fit_grad_accum: int = 1
    fit_checkpoint_every: int = 25
    """Steps between fit checkpoints a retried attempt resumes from (0 = never)."""
    fit_preview_every: int = 50
    """Steps between preview images published while fitting (0 = never)."""
    job_progress_interval_s: float = 0.25
    """Fewest seconds between two step events of a job: a fit of a small model takes dozens
    of steps a second, each fanned out to every watching socket. A fit also reads its loss
    back and checks for a cancel only this often. The first and last step, and a fit's
    preview and checkpoint steps, are always sent; 0 sends every step."""
    sample_steps: int = 25
    """Denoising steps of the sample images stored after a fit (set in its job parameters)."""
    covariance_captions: Path | None = None
    """Captions (one a line) for the base model's text covariance; default: the model folder's
    own `captions.txt` if it has one, else the bundled corpus of 12,000 captions."""
    job_time_limit_s: int = 2 * 3600
    """Hard limit of one job attempt; the broker's visibility timeout is derived from it."""
    job_heartbeat_s: float = 5.0
    job_stale_after_s: float = 30.0
    """A running job whose heartbeat is older than this is taken to have lost its worker."""
    job_requeue_after_s: float = 600.0
    """A job still queued this long after its last message is sent a new one (lost message)."""
    sweep_interval_s: float = 15.0
    job_store_retry_s: float = 300.0
    """How long a worker keeps a job's result in memory, retrying, while the database is
    unreachable or full, before it gives up (a full database then fails the job readably)."""

    # --- Webhooks (app/webhooks): a job's callback URL is told when the job ends ---
    webhook_allow_private: bool | None = None
    """Whether callback URLs may point at loopback, private or link-local addresses; unset =
    allowed in embedded mode (a receiver on this machine), refused in production."""
    webhook_timeout_s: float = 5.0
    """How long one delivery attempt waits for the receiver's answer."""
    webhook_retry_base_s: float = 10.0
    """The first retry's delay; later ones are 6, 30, 180 and 720 times it (10 s, 1 min,
    5 min, 30 min, 2 h). Tests shrink it."""
    webhook_max_attempts: int = 6
    """Attempts before a delivery is given up (the first one and five retries)."""
    webhook_poll_s: float = 5.0
    """How often each worker's dispatcher looks for due deliveries (retries, other processes'
    events); a job ending in the same process wakes it at once."""

    @model_validator(mode="after")
    def _production_needs_a_secret(self) -> Settings:
        if self.env == "production":
            if self.secret_key is None or not self.secret_key.get_secret_value():
                raise ValueError("STUDIO_SECRET_KEY must be set in production")
            if not self.database_url or not self.redis_url:
                raise ValueError("production needs STUDIO_DATABASE_URL and STUDIO_REDIS_URL")
        if self.embedded and (self.web_workers or 1) > 1:
            raise ValueError(
                "the embedded default runs one web process (STUDIO_WEB_WORKERS=1): its worker "
                "and read cache live in it; set STUDIO_REDIS_URL for more"
            )
        return self

    @property
    def web_processes(self) -> int:
        """How many web processes `serve` runs (STUDIO_WEB_WORKERS, else per the mode)."""
        if self.web_workers:
            return self.web_workers
        if self.embedded:
            return 1
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )

    @property
    def default_fit_steps(self) -> int:
        return self.fit_steps or (400 if self.env == "production" else 80)

    @property
    def webhooks_allow_private(self) -> bool:
        if self.webhook_allow_private is not None:
            return self.webhook_allow_private
        return self.env != "production"

    @property
    def embedded(self) -> bool:
        """True when the broker is in-memory and a worker runs inside the web process."""
        return not self.redis_url

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'studio.db').resolve()}"

    @property
    def broker_url(self) -> str:
        return self.redis_url or "memory://"

    @property
    def origin(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"

    def secret(self) -> str:
        """The signing secret; in embedded mode created on first use and persisted."""
        if self.secret_key is not None and self.secret_key.get_secret_value():
            return self.secret_key.get_secret_value()
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests clear this cache to change them)."""
    return Settings()
