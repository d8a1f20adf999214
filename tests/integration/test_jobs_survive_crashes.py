"""Jobs that survive crashes: real PostgreSQL, Redis, `serve` and `worker` processes.

One stack per module (worker start-up costs a torch import); tests run in file order and
the worker-killing ones come last.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from websockets.sync.client import connect

from app.concepts.models import CONCEPT_CONTENT_TYPE, Concept, ConceptStatus
from app.config import get_settings
from app.db import session_scope
from app.generations.models import GeneratedImage, Generation
from app.jobs import queue
from app.jobs.broker import TASK_FOR_KIND
from app.jobs.events import StateEvent
from app.jobs.lifecycle import request_cancel
from app.jobs.models import Job, JobKind, JobState
from app.jobs.params import IMAGES_MAX, STEPS_MAX, FitParams, GenerateParams, SamplePolicy
from app.jobs.progress import _id_key, get_progress_bus
from app.storage.models import Blob
from app.users.models import User
from tests.conftest import reset_caches
from tests.support.factories import make_concept, make_generation, make_user, session_cookie
from tests.support.services import fresh_postgres_database, fresh_redis
from tests.support.stack import Process, Stack, production_env, running_stack, wait_for
from tests.support.tiny_model import save_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Ctx:
    stack: Stack
    redis: redis.Redis
    broker: Celery
    user_id: uuid.UUID

    def workers(self) -> list[Process]:
        return [p for p in self.stack.processes if p.name != "web" and p.popen.poll() is None]

    def start_worker(self, name: str) -> Process:
        worker = self.stack.start_worker(name)
        wait_for(lambda: " ready." in worker.log(), 120, f"{name} did not start:\n{worker.log()}")
        return worker

    def cookies(self) -> dict[str, str]:
        return session_cookie(self.user_id)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    tmp = tmp_path_factory.mktemp("stack")
    settings = save_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")
    with (
        fresh_postgres_database() as postgres_url,
        fresh_redis() as redis_url,
        pytest.MonkeyPatch.context() as mp,
    ):
        env = production_env(
            postgres_url,
            redis_url,
            STUDIO_DATA_DIR=str(tmp / "var"),
            STUDIO_JOB_PROGRESS_INTERVAL_S="0",  # every step: replays are compared one for one
            **settings,
        )
        for name, value in env.items():
            if name.startswith("STUDIO_"):
                mp.setenv(name, value)
        reset_caches()
        broker = Celery(broker=redis_url)

        def send(job_id: uuid.UUID, kind: JobKind) -> None:
            # The test process's Celery app was configured for the embedded broker at import.
            task, queue_name = TASK_FOR_KIND[kind]
            broker.send_task(task, args=[str(job_id)], queue=queue_name)
            get_progress_bus().publish(str(job_id), StateEvent(state="queued"))

        mp.setattr(queue, "send_job_message", send)
        with running_stack(env, tmp) as stack:
            stack.migrate()
            stack.start_web()
            with session_scope() as session:
                user_id = make_user(session).id
            context = Ctx(stack, redis.Redis.from_url(redis_url), broker, user_id)
            context.start_worker("w1")
            yield context
        broker.close()
        reset_caches()


def _job(job_id: uuid.UUID) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def _wait_finished(job_id: uuid.UUID, timeout_s: float = 180) -> Job:
    wait_for(lambda: _job(job_id).state.finished, timeout_s, f"job {job_id} never finished")
    return _job(job_id)


def _events(ctx: Ctx, job_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    entries = ctx.redis.xrange(f"studio:progress:{job_id}")
    return [(eid.decode(), json.loads(fields[b"e"])) for eid, fields in entries]


def _steps(events: list[tuple[str, dict[str, Any]]]) -> list[int]:
    return [event["step"] for _, event in events if event["type"] == "step"]


def _wait_step(ctx: Ctx, job_id: uuid.UUID, step: int, timeout_s: float = 120) -> None:
    def reached() -> bool:
        return max(_steps(_events(ctx, job_id)), default=0) >= step

    wait_for(reached, timeout_s, f"job {job_id} never reached step {step}")


def _submit_fit(ctx: Ctx, steps: int) -> tuple[uuid.UUID, uuid.UUID]:
    with session_scope() as session:
        user = session.get(User, ctx.user_id)
        assert user is not None
        concept = make_concept(session, user)
        params = FitParams(
            token=concept.token,
            superclass="dog",
            steps=steps,
            seed=0,
            samples=SamplePolicy(count=2, steps=get_settings().sample_steps),
        )
        job = queue.create_job(session, params, owner_id=user.id, concept_id=concept.id)
        return concept.id, job.id


def _submit_generations(ctx: Ctx, count: int, steps: int = 2, n: int = 1) -> list[uuid.UUID]:
    with session_scope() as session:
        user = session.get(User, ctx.user_id)
        assert user is not None
        job_ids = []
        for index in range(count):
            generation = make_generation(session, user, "a photo of a dog")
            params = GenerateParams(
                prompt=generation.prompt, n=n, seed=index, steps=steps, guidance=7.5, strength=1.0
            )
            job = queue.create_job(session, params, owner_id=user.id, generation_id=generation.id)
            job_ids.append(job.id)
        return job_ids


@contextmanager
def _frozen(workers: list[Process]) -> Iterator[None]:
    """Stop the worker processes (SIGSTOP) for the block, then let them go on (SIGCONT)."""
    for worker in workers:
        os.kill(worker.popen.pid, signal.SIGSTOP)
    try:
        time.sleep(0.2)  # a progress event already sent to Redis lands before we read the stream
        yield
    finally:
        for worker in workers:
            os.kill(worker.popen.pid, signal.SIGCONT)


def _cancel_within_one_step(ctx: Ctx, job_id: uuid.UUID, after_step: int) -> None:
    """Cancel as the route does; at most one step may complete after the cancel commits.

    The workers are frozen while the stream's last id is read and the cancel commits, so
    "after the cursor" is exactly "after the commit": a fast step finishing between the
    read and the commit would otherwise be miscounted as one finished after it.
    """
    _wait_step(ctx, job_id, after_step)
    for _attempt in range(3):
        try:
            with _frozen(ctx.workers()), session_scope() as session:
                # A worker frozen inside its heartbeat's UPDATE holds the row: retry, never hang.
                session.execute(text("SET LOCAL lock_timeout = '2s'"))
                job = session.get(Job, job_id)
                assert job is not None and job.state == JobState.running
                request_cancel(session, job)
                session.flush()
                cursor = _events(ctx, job_id)[-1][0]
            break
        except OperationalError:
            continue
    else:
        pytest.fail("the job row stayed locked by a frozen worker three times")
    job = _wait_finished(job_id, 60)
    assert job.state == JobState.canceled
    canceled = {"type": "state", "state": "canceled"}
    wait_for(lambda: _events(ctx, job_id)[-1][1] == canceled, 10, "no canceled event")
    after = [event for eid, event in _events(ctx, job_id) if _id_key(eid) > _id_key(cursor)]
    steps_after = [event["step"] for event in after if event["type"] == "step"]
    print(f"cancel at step {after_step}+: steps completed after it was committed: {steps_after}")
    assert len(steps_after) <= 1
    assert after[-1] == canceled
    response = httpx.get(f"{ctx.stack.base_url}/api/jobs/{job_id}", cookies=ctx.cookies())
    assert response.json()["state"] == "canceled"


def test_the_second_generation_on_a_warm_worker_does_not_reload_the_base_model(ctx: Ctx) -> None:
    first_id, second_id = _submit_generations(ctx, 1)[0], None
    first = _wait_finished(first_id)
    second_id = _submit_generations(ctx, 1)[0]
    second = _wait_finished(second_id)
    assert first.state == second.state == JobState.succeeded, (first.error, second.error)
    assert first.result is not None and second.result is not None
    assert first.result["model_loads"] == second.result["model_loads"] == 1
    assert second.result["model_cache_hits"] == first.result["model_cache_hits"] + 1

    def took(job: Job) -> float:
        assert job.finished_at is not None and job.started_at is not None
        return (job.finished_at - job.started_at).total_seconds()

    print(
        f"cold: model loads {first.result['model_loads']}, load {first.result['model_load_s']}s,"
        f" job {took(first):.2f}s | warm: model loads {second.result['model_loads']},"
        f" job {took(second):.2f}s"
    )


def test_cancel_mid_generation_stops_within_one_step(ctx: Ctx) -> None:
    # The longest generation the contract allows: 4 images of 100 steps.
    (job_id,) = _submit_generations(ctx, 1, steps=STEPS_MAX, n=IMAGES_MAX)
    _cancel_within_one_step(ctx, job_id, after_step=3)


def test_cancel_mid_fit_stops_within_one_step_and_cancels_the_concept(ctx: Ctx) -> None:
    concept_id, job_id = _submit_fit(ctx, steps=500)
    _cancel_within_one_step(ctx, job_id, after_step=3)
    with session_scope() as session:
        concept = session.get(Concept, concept_id)
        assert concept is not None and concept.status == ConceptStatus.canceled


def test_a_websocket_that_reconnects_with_its_last_id_misses_nothing(ctx: Ctx) -> None:
    _, job_id = _submit_fit(ctx, steps=24)
    ws_url = ctx.stack.base_url.replace("http", "ws", 1) + f"/ws/jobs/{job_id}"
    cookie = "; ".join(f"{k}={v}" for k, v in ctx.cookies().items())
    received: list[tuple[str, dict[str, Any]]] = []
    with connect(ws_url, additional_headers={"Cookie": cookie}) as ws:
        while len([e for _, e in received if e["type"] == "step"]) < 3:
            message = json.loads(ws.recv(timeout=120))
            received.append((message["id"], message["event"]))
    last_id = received[-1][0]
    _wait_step(ctx, job_id, max(_steps(received)) + 4)  # it goes on while we are away
    with connect(f"{ws_url}?after={last_id}", additional_headers={"Cookie": cookie}) as ws:
        while True:
            try:
                message = json.loads(ws.recv(timeout=120))
            except Exception:  # closed by the server after the final state
                break
            received.append((message["id"], message["event"]))
    assert ws.close_code == 1000
    bus_events = [(eid, e) for eid, e in received if e["type"] != "queue"]  # queue: per client
    assert bus_events == _events(ctx, job_id)  # every event, in order, none twice
    assert bus_events[-1][1] == {"type": "state", "state": "succeeded"}
    assert _steps(bus_events) == list(range(1, 25))


def test_a_duplicate_delivery_of_a_finished_job_changes_nothing(ctx: Ctx) -> None:
    concept_id, job_id = _submit_fit(ctx, steps=4)
    before = _wait_finished(job_id)
    assert before.state == JobState.succeeded, before.error

    def snapshot() -> tuple[Any, ...]:
        with session_scope() as session:
            return (
                session.scalar(select(func.count()).select_from(Blob)),
                session.scalar(select(func.count()).select_from(GeneratedImage)),
                session.scalar(select(func.count()).select_from(Generation)),
                session.scalar(select(Concept.file_blob_id).where(Concept.id == concept_id)),
            )

    counts = snapshot()
    worker = ctx.workers()[0]
    task, queue_name = TASK_FOR_KIND[JobKind.fit]
    ctx.broker.send_task(task, args=[str(job_id)], queue=queue_name)
    handled = f"job {job_id} not claimed"
    wait_for(lambda: handled in worker.log(), 60, f"redelivery not handled:\n{worker.log()}")
    after = _job(job_id)
    assert (after.state, after.attempts, after.finished_at, after.result) == (
        before.state,
        before.attempts,
        before.finished_at,
        before.result,
    )
    assert snapshot() == counts


def test_a_fit_whose_worker_is_killed_resumes_from_its_checkpoint_on_a_new_worker(
    ctx: Ctx,
) -> None:
    concept_id, job_id = _submit_fit(ctx, steps=40)
    wait_for(
        lambda: (
            _job(job_id).checkpoint_blob_id is not None
            and max(_steps(_events(ctx, job_id)), default=0) >= 7
        ),
        120,
        "no checkpoint was saved",
    )
    for worker in ctx.workers():
        worker.kill()  # SIGKILL: no chance to ack, finish or clean up
    from workers.perfusion import FitCheckpoint

    with session_scope() as session:
        killed = session.get(Job, job_id)
        assert killed is not None and killed.state == JobState.running
        assert killed.checkpoint_blob_id is not None
        blob = session.get(Blob, killed.checkpoint_blob_id)
        assert blob is not None
        saved = FitCheckpoint.from_bytes(blob.data)
        checkpoint_step = saved.restart * 40 + saved.step  # steps of all the fits before it
    started = time.monotonic()
    ctx.start_worker("w2")
    job = _wait_finished(job_id, 240)
    print(
        f"killed with checkpoint at step {checkpoint_step}; resumed and finished "
        f"{time.monotonic() - started:.1f}s after the new worker was started"
    )
    assert job.state == JobState.succeeded, job.error
    assert job.attempts == 2
    assert job.result is not None and job.result["resumed_from_step"] == checkpoint_step
    events = [event for _, event in _events(ctx, job_id)]
    second = events.index({"type": "state", "state": "running", "attempt": 2})
    assert _steps([("", e) for e in events[second:]])[0] == checkpoint_step + 1
    with session_scope() as session:
        concept_files = session.scalar(
            select(func.count()).select_from(Blob).where(Blob.content_type == CONCEPT_CONTENT_TYPE)
        )
        concept = session.get(Concept, concept_id)
        assert concept is not None and concept.status == ConceptStatus.ready
        samples = session.scalars(select(Generation).where(Generation.concept_id == concept_id))
        sample_images = [len(sample.images) for sample in samples]
    finished_fits = _count_succeeded_fits()
    assert concept_files == finished_fits  # one concept file per fit, this one included once
    assert sample_images == [2]


def _count_succeeded_fits() -> int:
    with session_scope() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.kind == JobKind.fit, Job.state == JobState.succeeded)
            )
            or 0
        )


def test_fifty_generations_on_two_workers_all_succeed_and_none_runs_twice(ctx: Ctx) -> None:
    for name in ("w3", "w4")[: max(0, 2 - len(ctx.workers()))]:
        ctx.start_worker(name)
    assert len(ctx.workers()) == 2
    started = time.monotonic()
    job_ids = _submit_generations(ctx, 50)
    wait_for(
        lambda: all(_job(job_id).state.finished for job_id in job_ids), 600, "not all finished"
    )
    print(f"50 generations (1 image, 2 steps) on 2 workers: {time.monotonic() - started:.1f}s")
    with session_scope() as session:
        jobs = session.scalars(select(Job).where(Job.id.in_(job_ids))).all()
        assert {job.state for job in jobs} == {JobState.succeeded}
        assert {job.attempts for job in jobs} == {1}
        generation_ids = [job.generation_id for job in jobs]
        per_generation = session.execute(
            select(GeneratedImage.generation_id, func.count())
            .where(GeneratedImage.generation_id.in_(generation_ids))
            .group_by(GeneratedImage.generation_id)
        ).all()
        assert len(per_generation) == 50 and {count for _, count in per_generation} == {1}
        workers = {job.worker_id.split(":")[1] for job in jobs if job.worker_id}
    assert len(workers) == 2, "both workers took jobs"
