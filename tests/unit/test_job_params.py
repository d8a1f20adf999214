"""The typed job contract: one model per kind, bounds enforced on both sides of the broker."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from app.db import session_scope
from app.jobs.broker import TASK_FOR_KIND
from app.jobs.models import Job, JobKind, JobState
from app.jobs.params import (
    FIT_STEPS_MAX,
    PARAMS_FOR_KIND,
    SEED_MAX,
    FitParams,
    GenerateParams,
    SamplePolicy,
)
from app.jobs.runner import JobContext, JobOutcome, run_job
from tests.support.factories import make_job_row

GENERATE = {"prompt": "a dog", "n": 1, "seed": 0, "steps": 2, "guidance": 7.5, "strength": 1.0}


def test_every_job_kind_has_one_params_model_and_one_task() -> None:
    assert set(PARAMS_FOR_KIND) == set(TASK_FOR_KIND) == set(JobKind)
    assert all(model.kind == kind for kind, model in PARAMS_FOR_KIND.items())


def test_a_fit_row_round_trips_and_keeps_its_sample_policy() -> None:
    params = FitParams(
        token="<rex>", superclass="dog", steps=80, seed=3, samples=SamplePolicy(steps=2)
    )
    row = params.model_dump(mode="json")
    assert row["samples"] == {
        "count": 2,
        "steps": 2,
        "guidance": 7.5,
        "strength": 0.5,
        "prompt": "a photo of a {token}",
    }
    assert FitParams.model_validate(row) == params


def test_a_fit_row_queued_before_the_policy_existed_still_validates() -> None:
    row = {"token": "<rex>", "superclass": "dog", "steps": 80, "seed": 3, "samples": 2}
    assert FitParams.model_validate(row).samples == SamplePolicy(count=2)


@pytest.mark.parametrize(
    "change",
    [
        {"steps": 0},
        {"steps": FIT_STEPS_MAX + 1},
        {"seed": SEED_MAX + 1},
        {"seed": -1},
        {"samples": {"count": 99}},
        {"surprise": True},
    ],
)
def test_fit_params_out_of_bounds_are_refused(change: dict[str, object]) -> None:
    row = {"token": "<rex>", "superclass": "dog", "steps": 80, "seed": 3, **change}
    with pytest.raises(ValidationError):
        FitParams.model_validate(row)


@pytest.mark.parametrize(
    "change", [{"prompt": ""}, {"n": 5}, {"steps": 101}, {"guidance": float("nan")}, {"n": None}]
)
def test_generate_params_out_of_bounds_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GenerateParams.model_validate({**GENERATE, **change})


def test_a_generate_row_names_its_concepts_by_id() -> None:
    concept_id = uuid.uuid4()
    row = GenerateParams.model_validate({**GENERATE, "concept_ids": [str(concept_id)]})
    assert row.concept_ids == [concept_id] and row.negative_prompt == ""


def test_a_row_the_handler_cannot_read_fails_the_job_readably(embedded_env) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        job_id = make_job_row(session, JobKind.generate, params={**GENERATE, "n": 9}).id

    def handler(ctx: JobContext) -> JobOutcome:
        ctx.parse(GenerateParams)
        raise AssertionError("ran on invalid parameters")

    run_job(job_id, handler)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.state == JobState.failed
        assert (job.error or "").startswith("This job's parameters are not valid: n: ")
