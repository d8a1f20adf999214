"""The Celery application: broker from Settings, tuned for long GPU jobs.

This module must stay importable without torch: the web process imports it to enqueue work.
Task bodies live in `workers.tasks` and are imported by worker processes only.
"""

from __future__ import annotations

from celery import Celery

from app.config import get_settings

FIT_QUEUE = "fits"
GENERATE_QUEUE = "generations"
QUEUES = (FIT_QUEUE, GENERATE_QUEUE)

TASK_FOR_KIND = {
    "fit": ("studio.fit", FIT_QUEUE),
    "generate": ("studio.generate", GENERATE_QUEUE),
    "ping": ("studio.ping", GENERATE_QUEUE),
}


def visibility_timeout_s(hard_limit_s: int) -> int:
    """The broker's visibility timeout: longer than the longest job attempt, with margin.

    Shorter, and Redis would redeliver the message of a job that is still running. A job
    whose worker died is not left waiting for it: the sweeper re-enqueues it once its
    heartbeat is stale, and the redelivered original later finds the job finished.
    """
    return hard_limit_s + 1800


def make_celery() -> Celery:
    """A Celery app configured from the current Settings."""
    settings = get_settings()
    hard_limit_s = settings.job_time_limit_s
    transport_options = {"visibility_timeout": visibility_timeout_s(hard_limit_s)}
    app = Celery("perfusion_studio", broker=settings.broker_url)
    app.conf.update(
        task_ignore_result=True,  # the job row is the result
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=GENERATE_QUEUE,
        task_routes={name: {"queue": queue} for name, queue in TASK_FOR_KIND.values()},
        # Enforced by prefork pools; the solo pool we run ignores them, so the runner also
        # stops a job cooperatively between steps at the soft limit (JobContext).
        task_soft_time_limit=max(1, hard_limit_s - 60),
        task_time_limit=hard_limit_s,
        broker_transport_options=transport_options,
        result_backend_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        include=["workers.tasks"],
    )
    return app


celery_app = make_celery()
