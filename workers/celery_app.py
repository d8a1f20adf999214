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

# Longest job we expect (a full fit on a slow GPU), with margin. The broker's visibility
# timeout must exceed it, or Redis redelivers a message whose job is still running.
HARD_TIME_LIMIT_S = 2 * 3600
VISIBILITY_TIMEOUT_S = HARD_TIME_LIMIT_S + 1800


def make_celery() -> Celery:
    """A Celery app configured from the current Settings."""
    settings = get_settings()
    app = Celery("perfusion_studio", broker=settings.broker_url)
    app.conf.update(
        task_ignore_result=True,  # the job row is the result
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=GENERATE_QUEUE,
        task_routes={name: {"queue": queue} for name, queue in TASK_FOR_KIND.values()},
        task_soft_time_limit=HARD_TIME_LIMIT_S - 60,
        task_time_limit=HARD_TIME_LIMIT_S,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        include=["workers.tasks"],
    )
    return app


celery_app = make_celery()
