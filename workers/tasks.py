"""Celery tasks: thin wrappers that hand a job id to the runner with its handler."""

from __future__ import annotations

from workers import handlers
from workers.celery_app import celery_app
from workers.runner import run_job


@celery_app.task(name="studio.ping")
def ping(job_id: str) -> None:
    run_job(job_id, handlers.ping)
