"""Webhooks on PostgreSQL: a job's callback URL gets a signed POST when the job ends,
retried with growing delays until a 2xx, with one Webhook-Id; the state lives in the table,
so a new dispatcher carries on where a stopped one left off. The receiver is local."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from standardwebhooks import Webhook, WebhookVerificationError

from app.config import get_settings
from app.db import session_scope
from app.jobs.lifecycle import finish_job
from app.jobs.models import Job, JobState
from app.orm import utcnow
from app.webhooks import delivery
from app.webhooks.models import DeliveryState, WebhookDelivery
from app.webhooks.signing import new_secret
from tests.support.apihelpers import create_concept
from tests.support.receiver import Received, receiving, wait_until

RETRY_BASE_S = 0.1


@pytest.fixture(scope="module", autouse=True)
def quick_retries() -> Iterator[None]:
    """Retries 0.1 s, 0.6 s, 3 s… apart; dispatchers poll every 50 ms."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WEBHOOK_RETRY_BASE_S", str(RETRY_BASE_S))
        mp.setenv("STUDIO_WEBHOOK_POLL_S", "0.05")
        mp.setenv("STUDIO_WEBHOOK_TIMEOUT_S", "2")
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def no_leftovers(pg_app) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Each test starts with no deliveries and ends with no dispatcher running."""
    yield
    delivery.stop_dispatcher()
    with session_scope() as session:
        session.execute(delete(WebhookDelivery))


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set STUDIO_* variables for one test; the settings are read again, before and after."""

    def set_env(**env: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(f"STUDIO_{name.upper()}", value)
        get_settings.cache_clear()

    yield set_env
    monkeypatch.undo()
    get_settings.cache_clear()


def _finish(job_id: str, state: JobState, **fields: Any) -> None:
    """End a job as a worker would: running → final state, in one transaction."""
    with session_scope() as session:
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        job.state, job.attempts, job.started_at = JobState.running, 1, utcnow()
        finish_job(session, job, state, **fields)


def _deliveries(job_id: str) -> list[WebhookDelivery]:
    with session_scope() as session:
        return list(
            session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id))
        )


def _generation(client, callback_url: str | None = None) -> str:  # type: ignore[no-untyped-def]
    body = {"prompt": "a photo of a dog", "n": 1}
    if callback_url is not None:
        body["callback_url"] = callback_url
    response = client.post("/api/generations", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["job"]["id"])


def _hand_signature(secret: str, received: Received) -> str:
    """The spec's signature computed here with hmac alone, not by the library under test."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{received.headers['Webhook-Id']}.{received.headers['Webhook-Timestamp']}."
    digest = hmac.new(key, (signed + received.body).encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def test_a_finished_fit_is_posted_signed_with_the_owners_secret(make_user) -> None:  # type: ignore[no-untyped-def]
    alice = make_user()
    with receiving() as receiver:
        created = create_concept(alice, callback_url=receiver.url)
        job_id = created["job"]["id"]
        assert _deliveries(job_id) == []  # nothing until the job ends
        image_id = str(uuid.uuid4())
        _finish(job_id, JobState.succeeded, result={"sample_image_ids": [image_id]})
        assert delivery.deliver_due() == 1
        assert len(receiver.requests) == 1
    received = receiver.requests[0]
    secret = alice.get("/api/webhooks/secret").json()["secret"]
    assert secret.startswith("whsec_")

    Webhook(secret).verify(received.body, received.headers)  # the reference verifier
    assert received.headers["Webhook-Signature"] == _hand_signature(secret, received)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(received.body, received.headers)
    tampered = received.body.replace("succeeded", "failed")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, received.headers)

    body = json.loads(received.body)
    origin = get_settings().origin
    assert body["type"] == "job.succeeded" and body["timestamp"].endswith("Z")
    data = body["data"]
    assert data["job_id"] == job_id and data["kind"] == "fit" and data["status"] == "succeeded"
    assert data["concept_id"] == created["id"]
    assert data["concept_file_url"] == f"{origin}/api/concepts/{created['id']}/file"
    assert data["images"] == [{"id": image_id, "url": f"{origin}/api/images/{image_id}"}]
    assert received.headers["Content-Type"] == "application/json"

    job = alice.get(f"/api/jobs/{job_id}").json()
    assert job["callback_url"] == receiver.url
    webhook = job["webhook"]
    assert webhook["state"] == "delivered" and webhook["attempts"] == 1
    assert webhook["id"] == received.headers["Webhook-Id"] and webhook["last_status"] == 200


def test_a_rotated_secret_signs_the_next_webhooks(make_user) -> None:  # type: ignore[no-untyped-def]
    bob = make_user()
    first = bob.get("/api/webhooks/secret").json()["secret"]
    assert bob.get("/api/webhooks/secret").json()["secret"] == first  # made once, then kept
    rotated = bob.post("/api/webhooks/secret").json()["secret"]
    assert rotated != first
    with receiving() as receiver:
        job_id = _generation(bob, receiver.url)
        _finish(job_id, JobState.failed, error="boom")
        delivery.deliver_due()
    received = receiver.requests[0]
    Webhook(rotated).verify(received.body, received.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(first).verify(received.body, received.headers)
    body = json.loads(received.body)
    assert body["type"] == "job.failed" and body["data"]["error"] == "boom"
    assert body["data"]["kind"] == "generate" and body["data"]["generation_id"] is not None


def test_a_job_without_a_callback_url_sends_nothing(make_user) -> None:  # type: ignore[no-untyped-def]
    carol = make_user()
    with receiving() as receiver:
        job_id = _generation(carol)
        _finish(job_id, JobState.succeeded, result={"image_ids": []})
        assert delivery.deliver_due() == 0
        with session_scope() as session:
            assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
    assert receiver.requests == []
    job = carol.get(f"/api/jobs/{job_id}").json()
    assert job["callback_url"] is None and job["webhook"] is None


def test_500_twice_then_200_is_three_attempts_with_growing_delays_and_one_id(make_user) -> None:  # type: ignore[no-untyped-def]
    dave = make_user()
    with receiving(statuses=[500, 500]) as receiver:
        job_id = _generation(dave, receiver.url)
        delivery.start_dispatcher()
        _finish(job_id, JobState.succeeded, result={"image_ids": []})  # wakes it on commit
        assert wait_until(lambda: len(receiver.requests) == 3, 10), receiver.requests
        assert wait_until(lambda: _deliveries(job_id)[0].state == DeliveryState.delivered, 5)
    times = [r.at for r in receiver.requests]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] >= RETRY_BASE_S and gaps[1] >= 6 * RETRY_BASE_S, gaps
    assert gaps[1] > gaps[0], gaps
    ids = {r.headers["Webhook-Id"] for r in receiver.requests}
    (row,) = _deliveries(job_id)
    assert ids == {row.webhook_id}  # the idempotency key is the same on every attempt
    assert len({r.body for r in receiver.requests}) == 1  # and so is the body
    secret = dave.get("/api/webhooks/secret").json()["secret"]
    for received in receiver.requests:  # every attempt is signed afresh, and verifies
        Webhook(secret).verify(received.body, received.headers)
    assert (row.state, row.attempts, row.last_status) == (DeliveryState.delivered, 3, 200)
    assert row.delivered_at is not None and row.next_attempt_at is None
    assert len(receiver.requests) == 3  # nothing after the 2xx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_receiver_that_is_down_is_retried_across_a_dispatcher_restart(make_user) -> None:  # type: ignore[no-untyped-def]
    erin = make_user()
    port = _free_port()  # nothing listens there yet
    job_id = _generation(erin, f"http://127.0.0.1:{port}/hooks/studio")
    delivery.start_dispatcher()
    _finish(job_id, JobState.canceled)
    assert wait_until(lambda: _deliveries(job_id)[0].attempts >= 2, 10)
    delivery.stop_dispatcher()  # the process "stops"; only the table remembers
    (left,) = _deliveries(job_id)
    assert left.state == DeliveryState.pending and left.delivered_at is None
    assert left.next_attempt_at is not None and left.last_status is None
    assert "Connect" in (left.last_error or ""), left.last_error

    with receiving(port=port) as receiver:
        delivery.start_dispatcher()  # a new one, knowing only what the table says
        assert wait_until(lambda: _deliveries(job_id)[0].state == DeliveryState.delivered, 15)
    (done,) = _deliveries(job_id)
    assert done.attempts == left.attempts + 1
    assert [r.headers["Webhook-Id"] for r in receiver.requests] == [left.webhook_id]
    assert json.loads(receiver.requests[0].body)["type"] == "job.canceled"


def test_a_delivery_is_given_up_after_its_attempts(make_user, configure) -> None:  # type: ignore[no-untyped-def]
    configure(webhook_max_attempts="2")
    frank = make_user()
    with receiving(statuses=[503, 503, 503]) as receiver:
        job_id = _generation(frank, receiver.url)
        _finish(job_id, JobState.succeeded, result={"image_ids": []})
        delivery.start_dispatcher()
        assert wait_until(lambda: _deliveries(job_id)[0].state == DeliveryState.failed, 10)
    (row,) = _deliveries(job_id)
    assert (row.attempts, row.last_status, row.next_attempt_at) == (2, 503, None)
    assert len(receiver.requests) == 2


def test_canceling_over_the_api_posts_the_webhook_and_fit_again_keeps_the_url(make_user) -> None:  # type: ignore[no-untyped-def]
    grace = make_user()
    with receiving() as receiver:
        created = create_concept(grace, callback_url=receiver.url)
        job_id = created["job"]["id"]
        canceled = grace.post(f"/api/jobs/{job_id}/cancel")
        assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"
        assert canceled.json()["webhook"]["state"] == "pending"
        assert len(_deliveries(job_id)) == 1  # committed with the request
        delivery.deliver_due()
    assert json.loads(receiver.requests[0].body)["type"] == "job.canceled"
    again = grace.post(f"/api/concepts/{created['id']}/fit")
    assert again.status_code == 202, again.text
    assert grace.get(f"/api/jobs/{again.json()['job']['id']}").json()["callback_url"] == (
        receiver.url
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hook", "must start with http:// or https://"),
        ("example.com/hook", "must start with http:// or https://"),
        ("http:///hook", "has no host name"),
        ("http://example.com:99999/hook", "not a valid URL"),
        ("https://example.com/" + "x" * 2000, "2000"),
    ],
)
def test_an_invalid_callback_url_is_a_422_that_says_why(make_user, url: str, message: str) -> None:  # type: ignore[no-untyped-def]
    henry = make_user()
    response = henry.post("/api/generations", json={"prompt": "a dog", "callback_url": url})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"][-1] == "callback_url" and message in detail["msg"], detail
    files = [("images", (f"p{i}.png", b"x", "image/png")) for i in range(3)]
    form = {"name": "Rex", "token": "<rex-bad-url>", "superclass": "toy", "callback_url": url}
    refused = henry.post("/api/concepts", data=form, files=files)
    assert refused.status_code == 422, refused.text
    assert message in refused.json()["detail"][0]["msg"]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(
            Job.owner_id == uuid.UUID(henry.get("/api/auth/me").json()["id"])
        )) == 0  # fmt: skip


def test_private_addresses_are_refused_unless_the_setting_allows_them(make_user, configure) -> None:  # type: ignore[no-untyped-def]
    ivy = make_user()

    def create(url: str) -> Any:
        return ivy.post("/api/generations", json={"prompt": "a dog", "callback_url": url})

    configure(webhook_allow_private="false")
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/x",
                "http://[::1]/x", "http://169.254.169.254/latest"):  # fmt: skip
        response = create(url)
        assert response.status_code == 422, url
        assert "private address" in response.json()["detail"][0]["msg"], url
    # A host name is resolved only before each attempt (docs/webhooks.md); this job never
    # ends, so nothing is sent anywhere.
    assert create("https://hooks.example.com/x").status_code == 202
    configure(webhook_allow_private="true")
    assert create("http://127.0.0.1:9/x").status_code == 202
