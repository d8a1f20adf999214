"""finish_job: the one writer of final states; its event follows the commit, never a rollback."""

from __future__ import annotations

import uuid

import pytest

from app.concepts.models import Concept, ConceptStatus
from app.db import session_scope
from app.jobs.lifecycle import finish_job
from app.jobs.models import Job, JobKind, JobState
from app.jobs.progress import get_progress_bus
from tests.support.factories import make_concept, make_job_row, make_user


def _events(job_id: uuid.UUID) -> list[dict]:  # type: ignore[type-arg]
    return [event for _, event in get_progress_bus().read(str(job_id), None, 0)]


def _fit(session) -> tuple[uuid.UUID, Job]:  # type: ignore[no-untyped-def]
    concept = make_concept(session, make_user(session))
    job = make_job_row(session, JobKind.fit, concept_id=concept.id, state=JobState.running)
    return concept.id, job


@pytest.mark.parametrize(
    ("state", "error", "concept_status"),
    [
        (JobState.succeeded, None, ConceptStatus.ready),
        (JobState.failed, "boom", ConceptStatus.failed),
        (JobState.canceled, None, ConceptStatus.canceled),
    ],
)
def test_finishing_a_fit_moves_its_concept_and_announces_the_state_once_committed(
    embedded_env, state: JobState, error: str | None, concept_status: ConceptStatus
) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        concept_id, job = _fit(session)
        finish_job(session, job, state, error=error)
        session.flush()
        assert _events(job.id) == []  # not before the commit
    expected = {"type": "state", "state": state.value, **({"error": error} if error else {})}
    assert _events(job.id) == [expected]
    with session_scope() as session:
        concept = session.get(Concept, concept_id)
        assert concept is not None and concept.status == concept_status


def test_a_rolled_back_finish_announces_nothing(embedded_env) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        concept_id, job = _fit(session)
        job_id = job.id
    with pytest.raises(RuntimeError), session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        finish_job(session, job, JobState.failed, error="never")
        raise RuntimeError("the transaction fails after finish_job")
    assert _events(job_id) == []
    with session_scope() as session:
        job = session.get(Job, job_id)
        concept = session.get(Concept, concept_id)
        assert job is not None and job.state == JobState.running
        assert concept is not None and concept.status == ConceptStatus.fitting
