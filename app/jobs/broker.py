"""The Celery application: broker from Settings, tuned for long GPU jobs.

The web side sends messages by task name (`TASK_FOR_KIND`) and never imports the task
bodies: they live in `workers.tasks`, which Celery imports (`include`) in worker processes
only, so this module stays free of torch.
"""

from __future__ import annotations

from celery import Celery

from app.config import get_settings
from app.jobs.memory_broker import TRANSPORT as MEMORY_TRANSPORT
from app.jobs.models import JobKind

FIT_QUEUE = "fits"
GENERATE_QUEUE = "generations"
QUEUES = (FIT_QUEUE, GENERATE_QUEUE)

TASK_FOR_KIND: dict[JobKind, tuple[str, str]] = {
    JobKind.fit: ("studio.fit", FIT_QUEUE),
    JobKind.generate: ("studio.generate", GENERATE_QUEUE),
    JobKind.ping: ("studio.ping", GENERATE_QUEUE),
}
"""Each job kind's task name and queue: the whole of what the web side knows of a task."""


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
        # Embedded: the in-memory transport, its consumer woken by each put, not every 1 s.
        broker_transport=MEMORY_TRANSPORT if settings.embedded else None,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        include=["workers.tasks"],
    )
    return app


celery_app = make_celery()
