"""Celery tasks: thin wrappers that hand a job id to the runner with its handler."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready, worker_shutdown

from workers import handlers
from workers.celery_app import celery_app
from workers.runner import run_job
from workers.sweeper import start_sweeper, stop_sweeper


@celery_app.task(name="studio.ping")
def ping(job_id: str) -> None:
    run_job(job_id, handlers.ping)


@celery_app.task(name="studio.fit")
def fit(job_id: str) -> None:
    run_job(job_id, handlers.fit)


@celery_app.task(name="studio.generate")
def generate(job_id: str) -> None:
    run_job(job_id, handlers.generate)


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    start_sweeper()


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    stop_sweeper()
