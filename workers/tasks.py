"""Celery tasks: thin wrappers that hand a job id to the runner with its handler.

Task names come from `app.jobs.broker.TASK_FOR_KIND`, the names the web side sends by.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready, worker_shutdown

from app.config import get_settings
from app.db import get_engine, limit_idle_transactions
from app.jobs.broker import TASK_FOR_KIND, celery_app
from app.jobs.models import JobKind
from app.jobs.runner import run_job
from app.jobs.sweeper import start_sweeper, stop_sweeper
from app.webhooks.delivery import start_dispatcher, stop_dispatcher
from workers import handlers
from workers.model_cache import warm_in_background


@celery_app.task(name=TASK_FOR_KIND[JobKind.ping][0])
def ping(job_id: str) -> None:
    run_job(job_id, handlers.ping)


@celery_app.task(name=TASK_FOR_KIND[JobKind.fit][0])
def fit(job_id: str) -> None:
    run_job(job_id, handlers.fit)


@celery_app.task(name=TASK_FOR_KIND[JobKind.generate][0])
def generate(job_id: str) -> None:
    run_job(job_id, handlers.generate)


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    settings = get_settings()
    # Twice the stale timeout: a worker only starved of CPU for a moment keeps its session.
    limit_idle_transactions(get_engine(), 2 * settings.job_stale_after_s)
    if not settings.embedded:  # the embedded web process sweeps once, at its start-up
        start_sweeper()
    start_dispatcher()  # webhooks: retries, and what this and other processes just ended
    warm_in_background()


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    stop_sweeper()
    stop_dispatcher()
