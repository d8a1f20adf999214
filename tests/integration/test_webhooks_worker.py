"""Production shape: a webhook sent by a real `perfusion-studio worker` process (its
dispatcher, woken by the commit that ended the job) to a receiver in this test process."""

import json
from pathlib import Path

import httpx
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from app.concepts.models import Concept, ConceptStatus
from app.users.models import User
from app.users.service import create_token
from tests.support.receiver import receiving, wait_until
from tests.support.stack import production_env, running_stack


def test_a_worker_process_delivers_the_webhook_of_the_job_it_ended(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = production_env(postgres_url, redis_url, STUDIO_WEBHOOK_ALLOW_PRIVATE="true")
    with running_stack(env, tmp_path) as stack, receiving() as receiver:
        stack.migrate()
        engine = create_engine(postgres_url)
        with Session(engine) as session:
            user = User(username="hooked", password_hash="x")
            session.add(user)
            session.flush()
            # Ready but without a file: the worker fails the generation before any model loads.
            ready = ConceptStatus.ready
            session.add(Concept(owner_id=user.id, name="Rex", token="<rex-hook>",
                                superclass="dog", base_model="x", status=ready))  # fmt: skip
            _, api_token = create_token(session, user, "script")
            session.commit()
        stack.start_web()
        worker = stack.start_worker()
        api = httpx.Client(base_url=stack.base_url, timeout=10,
                           headers={"Authorization": f"Bearer {api_token}"})  # fmt: skip
        created = api.post("/api/generations", json={
            "prompt": "a <rex-hook> on the moon", "n": 1, "callback_url": receiver.url,
        })  # fmt: skip
        assert created.status_code == 202, created.text
        job_id = created.json()["job"]["id"]
        assert wait_until(lambda: receiver.requests, 120), f"no webhook:\n{worker.log()}"
        secret = api.get("/api/webhooks/secret").json()["secret"]

        def recorded() -> bool:  # the worker writes the outcome once the receiver has answered
            return api.get(f"/api/jobs/{job_id}").json()["webhook"]["state"] != "pending"

        assert wait_until(recorded, 30), f"delivery never recorded:\n{worker.log()}"
        job = api.get(f"/api/jobs/{job_id}").json()
        api.close()
        engine.dispose()
    (received,) = receiver.requests
    body = Webhook(secret).verify(received.body, received.headers)
    assert body["type"] == "job.failed" and body["data"]["job_id"] == job_id
    assert "not ready yet" in body["data"]["error"]
    assert json.loads(received.body)["data"]["kind"] == "generate"
    assert job["webhook"]["state"] == "delivered" and job["webhook"]["attempts"] == 1
