"""The embedded default: one process runs web, SQLite and an in-process Celery worker."""

from app.db import session_scope
from app.jobs.models import Job, JobState


def test_health_is_green_and_a_ping_job_round_trips(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/health", params={"roundtrip": "true"})
    body = response.json()
    assert response.status_code == 200, body
    assert body["database"] == {"ok": True, "dialect": "sqlite"}
    assert body["broker"]["transport"] == "memory"
    assert body["worker"]["ok"] and body["worker"]["mode"] == "in-process"
    assert body["roundtrip"]["state"] == "succeeded"
    with session_scope() as session:
        job = session.get(Job, __import__("uuid").UUID(body["roundtrip"]["job_id"]))
        assert job is not None
        assert job.state == JobState.succeeded
        assert job.attempts == 1
        assert job.result is not None and job.result["pong"] is True


def test_home_page_renders(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/")
    assert response.status_code == 200
    assert "Perfusion Studio" in response.text
