"""Which database errors are faults to wait out (down, full) and which are bugs."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError, OperationalError

from app.db import database_fault, session_scope
from app.jobs import sweeper
from app.jobs.models import JobState
from app.orm import utcnow
from tests.support.factories import make_job_row


class _PgError(Exception):
    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _operational(orig: Exception) -> OperationalError:
    return OperationalError("SELECT 1", {}, orig)


def test_a_refused_or_lost_connection_is_the_database_being_unavailable() -> None:
    assert database_fault(_operational(_PgError("connection refused", None))) == "unavailable"
    shutdown = _PgError("terminating connection due to administrator command", "57P01")
    assert database_fault(_operational(shutdown)) == "unavailable"
    starting = _PgError("the database system is starting up", "57P03")
    assert database_fault(_operational(starting)) == "unavailable"


def test_a_full_disk_is_told_apart_on_postgres_and_sqlite() -> None:
    assert database_fault(_operational(_PgError("could not extend file", "53100"))) == "disk_full"
    full = sqlite3.OperationalError("database or disk is full")
    assert database_fault(_operational(full)) == "disk_full"


def test_other_database_errors_are_not_faults_to_wait_out() -> None:
    duplicate = IntegrityError("INSERT", {}, _PgError("duplicate key", "23505"))
    assert database_fault(duplicate) is None
    syntax = _operational(_PgError("syntax error", "42601"))
    assert database_fault(syntax) is None
    assert database_fault(ValueError("x")) is None


def test_the_web_answers_503_with_a_message_when_the_database_is_down(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.concepts import views

    def down(*_args: object, **_kwargs: object) -> None:
        raise _operational(_PgError("connection refused", None))

    monkeypatch.setattr(views, "list_concepts", down)
    api = client.get("/api/concepts/public")
    page = client.get("/")
    assert api.status_code == page.status_code == 503
    assert api.headers["retry-after"] == "5"
    assert "database is not reachable" in api.json()["detail"]
    assert "Temporarily unavailable" in page.text and "Traceback" not in page.text


def test_after_a_database_outage_the_sweeper_leaves_running_jobs_alone(
    embedded_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[uuid.UUID] = []
    monkeypatch.setattr(sweeper, "send_job_message", lambda job_id, kind: sent.append(job_id))
    old = utcnow() - timedelta(minutes=5)
    with session_scope() as session:
        job_id = make_job_row(
            session, state=JobState.running, attempts=1, heartbeat_at=old, enqueued_at=old
        ).id
    assert sweeper.sweep(judge_heartbeats=False).requeued == []
    assert sweeper.sweep().requeued == [job_id]
