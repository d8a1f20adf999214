"""The estimated wait of a queued job: recent durations, the work ahead, shared workers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from app.db import session_scope
from app.jobs.estimates import FALLBACK_S, estimated_wait, typical_duration_s
from app.jobs.models import JobKind, JobState
from app.jobs.queue import job_ref
from app.orm import utcnow
from app.pages.concept_facts import wait_text
from tests.support.factories import make_job_row


def test_a_generation_behind_a_running_and_a_queued_fit(embedded_env: Path) -> None:
    now = utcnow()
    with session_scope() as session:
        assert typical_duration_s(session, JobKind.fit) == FALLBACK_S[JobKind.fit]
        for i, seconds in enumerate((100, 140, 120)):  # median 120 s
            start = now - timedelta(hours=1, minutes=i)
            make_job_row(
                session, JobKind.fit, state=JobState.succeeded,
                started_at=start, finished_at=start + timedelta(seconds=seconds),
            )  # fmt: skip
        make_job_row(
            session, JobKind.generate, state=JobState.succeeded,
            started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=2, seconds=-8),
        )  # fmt: skip
        assert typical_duration_s(session, JobKind.fit) == 120
        running = make_job_row(
            session, JobKind.fit, state=JobState.running, started_at=now - timedelta(seconds=30)
        )
        queued_fit = make_job_row(session, JobKind.fit, created_at=now - timedelta(seconds=20))
        mine = make_job_row(session, JobKind.generate, created_at=now - timedelta(seconds=10))
        make_job_row(session, JobKind.fit, created_at=now)  # behind it: not counted

        wait = estimated_wait(session, mine)
        assert wait is not None and wait.behind_fit
        assert abs(wait.seconds - ((120 - 30) + 120)) <= 1  # what the fit has left + one fit
        first = estimated_wait(session, queued_fit)
        assert first is not None and not first.behind_fit and abs(first.seconds - 90) <= 1
        assert estimated_wait(session, running) is None

        ref = job_ref(session, mine)
        assert ref.behind_fit and ref.wait_s == wait.seconds and ref.queue_position == 1
        assert wait_text(ref) == "Queued — next up, starts in about 3m 30s."
        make_job_row(session, JobKind.fit, state=JobState.running, started_at=now)
        session.info.pop("wait_estimates")  # read once per session: a new request sees it
        two_workers = estimated_wait(session, mine)  # two running: two workers share the queue
        assert two_workers is not None and abs(two_workers.seconds - (90 + 120 + 120) / 2) <= 1


def test_a_long_fit_ahead_is_waited_for_at_its_own_pace(embedded_env: Path) -> None:
    """A 2,000-step fit ahead was said to be done in the median time of short fits (50 s)."""
    now = utcnow()
    with session_scope() as session:
        start = now - timedelta(hours=1)
        make_job_row(
            session, JobKind.fit, state=JobState.succeeded,
            started_at=start, finished_at=start + timedelta(seconds=50),
        )  # fmt: skip
        make_job_row(
            session, JobKind.fit, state=JobState.running, progress=0.1,
            started_at=now - timedelta(seconds=60),
        )  # fmt: skip
        mine = make_job_row(session, JobKind.fit, created_at=now)
        wait = estimated_wait(session, mine)
        assert wait is not None and abs(wait.seconds - 540) <= 2  # 60 s for 10 %: 540 s left
