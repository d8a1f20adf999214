"""The embedded default's worker: a Celery worker on a thread of the web process.

Celery imports the task bodies (the broker app's `include`) when the worker starts; the
web code imports nothing of `workers/` itself.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import signals
from celery.worker import WorkController

from app.jobs.broker import QUEUES, celery_app

log = logging.getLogger(__name__)

_worker: EmbeddedWorker | None = None


class _Controller(WorkController):
    """Celery's WorkController, announcing `worker_ready` once it consumes, as the
    `celery worker` command's controller does (the plain one does not): the worker's start-up
    work hangs off that signal (`workers/tasks.py`: warming the base model, the webhook
    dispatcher; the periodic sweeper only outside the embedded default, which sweeps once at
    start-up)."""

    def on_consumer_ready(self, consumer: Any) -> None:
        signals.worker_ready.send(sender=consumer)


class EmbeddedWorker:
    """A solo-pool Celery worker consuming the in-memory broker on a daemon thread."""

    def __init__(self) -> None:
        self.controller = _Controller(
            app=celery_app,
            pool_cls="solo",
            concurrency=1,
            queues=list(QUEUES),
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel="INFO",
        )
        self.thread = threading.Thread(
            target=self.controller.start, name="embedded-worker", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        self.controller.stop(in_sighandler=False)
        self.thread.join(timeout=10)


def start_embedded_worker() -> EmbeddedWorker:
    """Start (once per process) and return the in-process worker."""
    global _worker
    if _worker is None or not _worker.alive:
        _worker = EmbeddedWorker()
        _worker.start()
    return _worker


def embedded_worker() -> EmbeddedWorker | None:
    return _worker
