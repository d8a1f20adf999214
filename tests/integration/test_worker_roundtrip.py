"""Production shape: web and a real `perfusion-studio worker` process, via Redis and Postgres."""

import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.jobs.models import Job, JobState
from tests.support.stack import production_env, running_stack, wait_for


def test_a_job_submitted_by_the_web_app_runs_on_a_worker_process(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    with running_stack(production_env(postgres_url, redis_url), tmp_path) as stack:
        stack.migrate()
        stack.start_web()
        worker = stack.start_worker()

        def worker_answers() -> bool:
            body = httpx.get(f"{stack.base_url}/api/health", timeout=5).json()
            return bool(body["worker"]["ok"])

        wait_for(worker_answers, 60, f"worker never answered a ping:\n{worker.log()}")
        response = httpx.get(f"{stack.base_url}/api/health?roundtrip=true", timeout=30)
        body = response.json()
        assert response.status_code == 200, body
        assert body["database"]["dialect"] == "postgresql"
        assert body["broker"]["transport"] == "redis"

        engine = create_engine(postgres_url)
        with Session(engine) as session:
            job = session.scalar(
                select(Job).where(Job.id == uuid.UUID(body["roundtrip"]["job_id"]))
            )
            assert job is not None
            assert job.state == JobState.succeeded
            assert job.result is not None and job.result["pong"] is True
            # the result came from the worker process, not from the web process
            web_pid = str(stack.processes[0].popen.pid)
            assert job.result["worker"].split(":")[1] == str(worker.popen.pid) != web_pid
        engine.dispose()
