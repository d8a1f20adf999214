"""Property-based fuzzing of every operation in the OpenAPI schema: no input may cause a 5xx.

Schemathesis generates requests from the schema (valid and edge-case bodies, query strings,
path ids, uploads) and sends them to the embedded app as a real signed-in user (Bearer).
Examples per operation are bounded so the whole run stays well under a minute in CI.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings

from app.db import session_scope
from app.jobs import queue as jobs_queue
from app.jobs.models import JobKind
from app.security.tokens import hash_token, new_token
from app.users.models import ApiToken
from tests.support.factories import make_concept, make_user

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))


def fuzz(operation, auth, calls, failures):  # type: ignore[no-untyped-def]
    """A Hypothesis test sending `EXAMPLES` generated requests to one operation."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:  # type: ignore[no-untyped-def]
        response = case.call(headers=auth)
        calls.append((operation.label, response.status_code))
        if response.status_code >= 500:
            failures.append(f"{operation.label}: {response.status_code} {case.as_curl_command()}")

    return run


def test_no_operation_answers_5xx(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    send = jobs_queue.send_job_message
    monkeypatch.setattr(  # fits and generations stay queued; health pings still round-trip
        jobs_queue,
        "send_job_message",
        lambda job_id, kind: send(job_id, kind) if kind == JobKind.ping else None,
    )
    token = new_token("pst_")
    with session_scope() as session:
        user = make_user(session)
        session.add(ApiToken(user_id=user.id, name="fuzz", token_hash=hash_token(token)))
        make_concept(session, user)  # something to list, resolve and search
    auth = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)

    calls: list[tuple[str, int]] = []
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        fuzz(operation, auth, calls, failures)()

    with capsys.disabled():
        statuses = sorted({status for _, status in calls})
        print(f"\nschemathesis: {len(operations)} operations, {len(calls)} requests, "
              f"statuses seen {statuses}, 5xx: {len(failures)}")  # fmt: skip
    assert len(operations) >= 20, [op.label for op in operations]
    assert not failures, "\n".join(failures[:20])
