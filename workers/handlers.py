"""Job handlers: what each kind of job does once the runner has claimed it."""

from __future__ import annotations

import time

from workers.runner import JobContext, JobOutcome


def ping(ctx: JobContext) -> JobOutcome:
    """A round trip through broker and worker, proving both are alive."""
    return JobOutcome(result={"pong": True, "worker": ctx.worker_id, "at": time.time()})
