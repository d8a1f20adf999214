"""The sweeper re-enqueues jobs whose message or worker was lost, and ends hopeless ones."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from app.concepts.models import Concept, ConceptStatus
from app.db import session_scope
from app.jobs import sweeper
from app.jobs.models import Job, JobKind, JobState
from app.orm import utcnow
from tests.support.factories import make_concept, make_job_row, make_user


@pytest.fixture
def sent(embedded_env, monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:  # type: ignore[no-untyped-def]
    messages: list[uuid.UUID] = []
    monkeypatch.setattr(sweeper, "send_job_message", lambda job_id, kind: messages.append(job_id))
    return messages


def _job(**fields) -> uuid.UUID:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return make_job_row(session, **fields).id


def _get(job_id: uuid.UUID) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def test_a_dead_workers_job_gets_one_new_message_per_stale_period(sent) -> None:  # type: ignore[no-untyped-def]
    old = utcnow() - timedelta(minutes=5)
    dead = _job(state=JobState.running, attempts=1, heartbeat_at=old, enqueued_at=old)
    alive = _job(state=JobState.running, attempts=1, heartbeat_at=utcnow(), enqueued_at=old)
    assert sweeper.sweep().requeued == [dead]
    assert sweeper.sweep().requeued == []  # just re-sent: not again until it is stale again
    assert sent == [dead]
    assert _get(dead).state == JobState.running  # the claim, not the sweeper, takes it over
    assert _get(alive).heartbeat_at is not None


def test_a_lost_queued_message_is_sent_again_only_after_the_requeue_delay(sent) -> None:  # type: ignore[no-untyped-def]
    lost = _job(enqueued_at=utcnow() - timedelta(hours=1))
    fresh = _job(enqueued_at=utcnow())
    report = sweeper.sweep()
    assert report.requeued == [lost] and sent == [lost]
    assert _get(fresh).state == JobState.queued


def test_jobs_out_of_attempts_fail_readably_and_their_concept_too(sent) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        concept_id = make_concept(session, make_user(session)).id
    stale = utcnow() - timedelta(minutes=5)
    job_id = _job(
        kind=JobKind.fit,
        concept_id=concept_id,
        state=JobState.running,
        attempts=3,
        heartbeat_at=stale,
    )
    assert sweeper.sweep().failed == [job_id]
    job = _get(job_id)
    assert job.state == JobState.failed and job.finished_at is not None
    assert "stopped unexpectedly 3 times" in (job.error or "")
    with session_scope() as session:
        concept = session.get(Concept, concept_id)
        assert concept is not None and concept.status == ConceptStatus.failed
    assert sent == []


def test_a_cancel_requested_job_whose_worker_died_ends_canceled(sent) -> None:  # type: ignore[no-untyped-def]
    stale = utcnow() - timedelta(minutes=5)
    job_id = _job(state=JobState.running, attempts=1, heartbeat_at=stale, cancel_requested=True)
    assert sweeper.sweep().canceled == [job_id]
    assert _get(job_id).state == JobState.canceled and sent == []


def test_embedded_start_up_requeues_every_orphaned_job(sent) -> None:  # type: ignore[no-untyped-def]
    running = _job(state=JobState.running, attempts=1, heartbeat_at=utcnow(), worker_id="gone")
    queued = _job(enqueued_at=utcnow())
    report = sweeper.sweep(orphaned_running=True)
    assert sorted(report.requeued) == sorted([running, queued]) == sorted(sent)
    job = _get(running)
    assert (job.state, job.worker_id, job.attempts) == (JobState.queued, None, 1)


def test_a_broker_loss_seen_by_a_sweep_that_cannot_commit_is_seen_again(
    sent, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    import contextlib

    queued = _job(enqueued_at=utcnow())  # fresh: only a broker loss re-sends it now
    marks = iter([True, False])  # the broker mark was missing once, then set by that sweep
    forgotten: list[bool] = []
    monkeypatch.setattr(sweeper, "broker_lost_messages", lambda: next(marks))
    monkeypatch.setattr(sweeper, "forget_broker_mark", lambda: forgotten.append(True))
    real_scope = sweeper.session_scope

    @contextlib.contextmanager
    def failing_commit():  # type: ignore[no-untyped-def]
        with real_scope() as session:
            yield session
            raise RuntimeError("the database went away at commit")

    monkeypatch.setattr(sweeper, "session_scope", failing_commit)
    with pytest.raises(RuntimeError):
        sweeper.sweep()
    assert forgotten == [True] and sent == []  # the mark is cleared, nothing was sent
    monkeypatch.setattr(sweeper, "session_scope", real_scope)
    monkeypatch.setattr(sweeper, "broker_lost_messages", lambda: bool(forgotten))
    assert sweeper.sweep().requeued == [queued]
