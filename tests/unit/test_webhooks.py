"""Webhooks without services: which URLs a job may name, the retry schedule, a delivery
recorded only with a committed final state, and the embedded default delivering them
from its own process (also what a previous run left pending)."""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from standardwebhooks import Webhook

from app.auth.sessions import SESSION_COOKIE, make_session_value
from app.concepts.models import ConceptStatus
from app.config import REPO_ROOT, Settings, get_settings
from app.db import session_scope
from app.jobs.lifecycle import finish_job
from app.jobs.models import Job, JobKind, JobState
from app.users.models import User
from app.webhooks import delivery
from app.webhooks.models import DeliveryState, WebhookDelivery
from app.webhooks.signing import new_secret, signed_headers
from app.webhooks.urls import CallbackRefused, check_callback_url, delivery_refusal
from tests.support.factories import make_concept, make_job_row, make_user
from tests.support.receiver import receiving, wait_until


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://api.localhost/hook",
        "https://10.0.0.7/hook",
        "https://192.168.1.20/hook",
        "http://172.16.0.1/hook",
        "http://100.64.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9000/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_private_and_loopback_callbacks_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(CallbackRefused, match="private address"):
        check_callback_url(url, allow_private=False)
    assert check_callback_url(url, allow_private=True) == url


def test_public_callbacks_pass_and_malformed_ones_say_why() -> None:
    for url in ("https://hooks.example.com/perfusion?x=1", "http://93.184.215.14:8443/h"):
        assert check_callback_url(url, allow_private=False) == url
    for url, why in [
        ("javascript:alert(1)", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("https://", "no host name"),
        ("http://example.com:0x50/", "not a valid URL"),
    ]:
        with pytest.raises(CallbackRefused, match=why):
            check_callback_url(url, allow_private=True)


def test_a_host_name_is_checked_again_where_it_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS can point a public-looking name at an internal address: checked before each
    attempt (no lookup leaves this machine: the resolver is replaced)."""

    def resolve(host: str, port: int, **_: Any) -> list[Any]:
        address = {"inside.example.com": "10.0.0.5", "outside.example.com": "93.184.215.14"}
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    refusal = delivery_refusal("https://inside.example.com/h", allow_private=False)
    assert refusal is not None and "10.0.0.5" in refusal
    assert delivery_refusal("https://outside.example.com/h", allow_private=False) is None
    assert delivery_refusal("https://inside.example.com/h", allow_private=True) is None


def test_private_addresses_are_allowed_by_default_only_outside_production() -> None:
    assert Settings().webhooks_allow_private
    services = {"database_url": "postgresql://h/d", "redis_url": "redis://r"}
    production = Settings(env="production", secret_key="x", **services)
    assert not production.webhooks_allow_private
    allowed = Settings(env="production", secret_key="x", webhook_allow_private=True, **services)
    assert allowed.webhooks_allow_private


def test_the_default_retry_schedule_backs_off_to_two_hours() -> None:
    settings = Settings()
    delays = [delivery.retry_delay_s(n, settings) for n in range(1, 7)]
    assert delays == [10, 60, 300, 1800, 7200, 7200]
    assert settings.webhook_max_attempts == 6


def test_the_documented_verifier_accepts_our_signatures_and_nothing_else() -> None:
    """The stdlib snippet of docs/webhooks.md, run as a receiver would run it."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "docs/webhooks.md").read_text(), re.S)
    (snippet,) = [block for block in blocks if "def verify(" in block]
    scope: dict[str, Any] = {}
    exec(snippet, scope)  # our own documentation
    verify = scope["verify"]
    secret, body = new_secret(), '{"type":"job.succeeded","data":{}}'
    headers = signed_headers(secret, "msg_1", body)
    assert verify(secret, headers, body.encode())
    assert verify(secret, {k.lower(): v for k, v in headers.items()}, body.encode())
    assert not verify(new_secret(), headers, body.encode())
    assert not verify(secret, headers, body.replace("succeeded", "failed").encode())
    assert not verify(secret, {**headers, "Webhook-Id": "msg_2"}, body.encode())
    old = signed_headers(secret, "msg_1", body, timestamp=int(time.time()) - 3600)
    assert not verify(secret, old, body.encode())  # a replay an hour later


def _deliveries() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(WebhookDelivery)) or 0)


def test_a_delivery_is_recorded_only_with_a_committed_final_state(embedded_env: Path) -> None:
    with session_scope() as session:
        user = make_user(session)
        job = make_job_row(session, JobKind.generate, owner_id=user.id, state=JobState.running,
                           callback_url="http://127.0.0.1:9/h")  # fmt: skip
        job_id = job.id
    with pytest.raises(RuntimeError), session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        finish_job(session, job, JobState.failed, error="never")
        raise RuntimeError("the transaction fails after finish_job")
    assert _deliveries() == 0
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        finish_job(session, job, JobState.failed, error="boom")
    assert _deliveries() == 1


def _signed_in(client: TestClient, user_id: uuid.UUID) -> TestClient:
    client.cookies.set(SESSION_COOKIE, make_session_value(get_settings().secret(), user_id))
    return client


def test_the_embedded_app_delivers_from_its_own_process(embedded_env: Path) -> None:
    """A delivery left pending by a previous run goes out at start-up; a generation that
    the in-process worker fails is told to its callback URL by the in-process dispatcher."""
    from app.main import create_app

    with receiving() as receiver:
        with session_scope() as session:
            user = make_user(session)
            user_id = user.id
            concept = make_concept(session, user, status=ConceptStatus.ready)  # no file
            token = concept.token
            left = make_job_row(session, JobKind.generate, owner_id=user.id,
                                state=JobState.running, callback_url=receiver.url)  # fmt: skip
            finish_job(session, left, JobState.canceled)  # no dispatcher runs yet
        assert _deliveries() == 1 and receiver.requests == []

        with TestClient(create_app()) as client:
            assert wait_until(lambda: len(receiver.requests) == 1, 30), "left-over not sent"
            _signed_in(client, user_id)
            created = client.post(
                "/api/generations",
                json={"prompt": f"a {token} on the moon", "n": 1, "callback_url": receiver.url},
            )
            assert created.status_code == 202, created.text
            job_id = created.json()["job"]["id"]
            assert wait_until(lambda: len(receiver.requests) == 2, 120), "no webhook"
            job = client.get(f"/api/jobs/{job_id}").json()
            secret = client.get("/api/webhooks/secret").json()["secret"]
        assert job["webhook"]["state"] == "delivered", job

    first, second = (json.loads(r.body) for r in receiver.requests)
    assert first["type"] == "job.canceled" and first["data"]["job_id"] == str(left.id)
    assert second["type"] == "job.failed" and second["data"]["job_id"] == job_id
    assert "not ready yet" in second["data"]["error"]
    for received in receiver.requests:
        Webhook(secret).verify(received.body, received.headers)
    with session_scope() as session:
        states = set(session.scalars(select(WebhookDelivery.state)))
        owner = session.get(User, user_id)
        assert owner is not None and owner.webhook_secret == secret
    assert states == {DeliveryState.delivered}
