"""The runner's claim protocol: the job row, not the message, decides what runs."""

import uuid
from datetime import timedelta

from app.db import session_scope
from app.jobs.models import Job, JobKind, JobState
from app.jobs.runner import JobCanceled, JobContext, JobOutcome, run_job
from app.orm import utcnow


def _job(**fields) -> uuid.UUID:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        job = Job(kind=JobKind.ping, params={}, max_attempts=3, **fields)
        session.add(job)
        session.flush()
        return job.id


def _get(job_id: uuid.UUID) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_duplicate_delivery_of_a_finished_job_changes_nothing(embedded_env) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []

    def handler(ctx: JobContext) -> JobOutcome:
        calls.append(ctx.attempt)
        return JobOutcome(result={"n": len(calls)})

    job_id = _job()
    run_job(job_id, handler)
    before = _get(job_id)
    run_job(job_id, handler)  # the same message delivered again
    after = _get(job_id)
    assert calls == [1]
    assert (after.state, after.attempts, after.result, after.finished_at) == (
        JobState.succeeded,
        1,
        {"n": 1},
        before.finished_at,
    )


def test_a_job_running_elsewhere_with_a_fresh_heartbeat_is_left_alone(embedded_env) -> None:  # type: ignore[no-untyped-def]
    job_id = _job(state=JobState.running, attempts=1, worker_id="other", heartbeat_at=utcnow())
    run_job(job_id, lambda ctx: JobOutcome())
    job = _get(job_id)
    assert (job.state, job.worker_id, job.attempts) == (JobState.running, "other", 1)


def test_a_job_whose_worker_died_is_taken_over(embedded_env) -> None:  # type: ignore[no-untyped-def]
    stale = utcnow() - timedelta(minutes=5)
    job_id = _job(state=JobState.running, attempts=1, worker_id="dead", heartbeat_at=stale)
    run_job(job_id, lambda ctx: JobOutcome(result={"attempt": ctx.attempt}))
    job = _get(job_id)
    assert (job.state, job.attempts, job.result) == (JobState.succeeded, 2, {"attempt": 2})


def test_a_job_out_of_attempts_fails_with_a_readable_message(embedded_env) -> None:  # type: ignore[no-untyped-def]
    stale = utcnow() - timedelta(minutes=5)
    job_id = _job(state=JobState.running, attempts=3, worker_id="dead", heartbeat_at=stale)
    run_job(job_id, lambda ctx: JobOutcome())
    job = _get(job_id)
    assert job.state == JobState.failed
    assert "stopped unexpectedly 3 times" in (job.error or "")


def test_handler_errors_and_cancellation_end_the_job(embedded_env) -> None:  # type: ignore[no-untyped-def]
    def broken(ctx: JobContext) -> JobOutcome:
        raise RuntimeError("boom")

    def canceled(ctx: JobContext) -> JobOutcome:
        raise JobCanceled

    failed_id, canceled_id = _job(), _job()
    run_job(failed_id, broken)
    run_job(canceled_id, canceled)
    assert (_get(failed_id).state, _get(failed_id).error) == (JobState.failed, "RuntimeError: boom")
    assert _get(canceled_id).state == JobState.canceled
