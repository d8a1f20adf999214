"""How long a queued job will wait: recent durations of finished jobs and what is ahead of it.

While jobs queue, every worker is busy, so the running jobs are as many as the workers. The
wait is the work ahead (what the running jobs have left, plus a typical duration for each
queued job created earlier, whatever its kind: a generation waits behind a fit on a shared
worker) divided by that many workers. A guess, said as one ("about 3 minutes").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs.models import Job, JobKind, JobState
from app.orm import utcnow

RECENT = 20
FALLBACK_S = {JobKind.fit: 120.0, JobKind.generate: 20.0, JobKind.ping: 1.0}
"""Before anything has finished here: a CPU-sized guess."""


def _naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None)


def typical_duration_s(session: Session, kind: JobKind) -> float:
    """Median run time of the last RECENT succeeded jobs of this kind."""
    rows = session.execute(
        select(Job.started_at, Job.finished_at)
        .where(
            Job.kind == kind,
            Job.state == JobState.succeeded,
            Job.started_at.is_not(None),
            Job.finished_at.is_not(None),
        )
        .order_by(Job.finished_at.desc())
        .limit(RECENT)
    ).all()
    durations = sorted(
        (_naive(end) - _naive(start)).total_seconds() for start, end in rows if start and end
    )
    if not durations:
        return FALLBACK_S.get(kind, 60.0)
    return max(1.0, durations[len(durations) // 2])


@dataclass(frozen=True)
class Wait:
    seconds: float
    behind_fit: bool
    """A generation with a fit running or queued ahead of it (a fit takes minutes)."""


def _left_s(
    typical: float, started: datetime | None, progress: float | None, now: datetime
) -> float:
    """What a running job has left: from its own pace once it has made some progress (a
    2,000-step fit behind a median of 6-step ones is not a minute from done), else the typical
    duration less the time it has run."""
    ran = (now - _naive(started)).total_seconds() if started else 0.0
    if progress and MIN_PROGRESS <= progress < 1:
        return ran * (1 - progress) / progress
    return max(0.0, typical - ran)


MIN_PROGRESS = 0.01
"""Below 1 % the pace is mostly the model loading: the typical duration says more."""


def estimated_wait(session: Session, job: Job) -> Wait | None:
    """How long until a worker picks this queued job up; None when it is not queued."""
    if job.state != JobState.queued:
        return None
    # Durations and the running jobs once per session (a list of cards asks for several).
    if "wait_estimates" not in session.info:
        session.info["wait_estimates"] = (
            {kind: typical_duration_s(session, kind) for kind in JobKind},
            session.execute(
                select(Job.kind, Job.started_at, Job.progress).where(Job.state == JobState.running)
            ).all(),
        )
    typical, running = session.info["wait_estimates"]
    now = _naive(utcnow())
    ahead = session.scalars(
        select(Job.kind).where(
            Job.state == JobState.queued, Job.created_at < job.created_at, Job.id != job.id
        )
    ).all()
    left = sum(
        _left_s(typical[kind], started, progress, now) for kind, started, progress in running
    )
    work = left + sum(typical[kind] for kind in ahead)
    fits_ahead = any(kind == JobKind.fit for kind, *_ in running) or JobKind.fit in ahead
    return Wait(round(work / max(1, len(running)), 1), job.kind != JobKind.fit and fits_ahead)
