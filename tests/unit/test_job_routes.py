"""Job status, cancel and the progress websocket: owners only, replay from the last event id."""

from __future__ import annotations

import uuid

import pytest
from starlette.websockets import WebSocketDisconnect

from app.concepts.models import Concept, ConceptStatus
from app.config import get_settings
from app.db import session_scope
from app.jobs.events import StateEvent, StepEvent
from app.jobs.models import Job, JobKind, JobState
from app.jobs.progress import get_progress_bus
from app.orm import utcnow
from tests.support.factories import make_concept, make_job_row, make_user, session_cookie


@pytest.fixture
def people(client):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        owner, other = make_user(session), make_user(session)
        concept = make_concept(session, owner)
        job = make_job_row(session, JobKind.fit, owner_id=owner.id, concept_id=concept.id)
        earlier = make_job_row(session, JobKind.fit, owner_id=other.id)
        earlier.created_at = job.created_at.replace(year=2020)
        return {"owner": owner.id, "other": other.id, "concept": concept.id, "job": job.id}


def _as(client, user_id: uuid.UUID | None):  # type: ignore[no-untyped-def]
    """The client, signed in as `user_id` (anonymous when None)."""
    client.cookies.clear()
    if user_id is not None:
        client.cookies.update(session_cookie(user_id))
    return client


def test_the_owner_sees_state_and_queue_position_others_get_404(client, people) -> None:  # type: ignore[no-untyped-def]
    url = f"/api/jobs/{people['job']}"
    body = _as(client, people["owner"]).get(url).json()
    assert (body["state"], body["queue_position"], body["attempts"]) == ("queued", 2, 0)
    assert _as(client, people["other"]).get(url).status_code == 404
    assert _as(client, None).get(url).status_code == 404
    assert _as(client, people["owner"]).get(f"/api/jobs/{uuid.uuid4()}").status_code == 404


def test_cancel_of_a_queued_fit_is_immediate_and_cancels_its_concept(client, people) -> None:  # type: ignore[no-untyped-def]
    url = f"/api/jobs/{people['job']}/cancel"
    assert _as(client, people["other"]).post(url).status_code == 404
    assert _as(client, people["owner"]).post(url).json()["state"] == "canceled"
    with session_scope() as session:
        concept = session.get(Concept, people["concept"])
        assert concept is not None and concept.status == ConceptStatus.canceled
    events = get_progress_bus().read(str(people["job"]), None, 0)
    assert events[-1][1] == {"type": "state", "state": "canceled"}


def test_cancel_of_a_running_job_asks_its_worker_to_stop(client, people) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        job = session.get(Job, people["job"])
        assert job is not None
        job.state, job.worker_id, job.heartbeat_at, job.attempts = (
            JobState.running,
            "w",
            utcnow(),
            1,
        )
    body = _as(client, people["owner"]).post(f"/api/jobs/{people['job']}/cancel").json()
    assert (body["state"], body["cancel_requested"]) == ("running", True)
    assert get_progress_bus().read(str(people["job"]), None, 0)[-1][1]["state"] == "canceling"


def test_websocket_replays_after_the_last_seen_id_then_tails_to_the_final_state(
    client, people
) -> None:  # type: ignore[no-untyped-def]
    bus, job = get_progress_bus(), str(people["job"])
    first = bus.publish(job, StepEvent(step=1, total=3))
    bus.publish(job, StepEvent(step=2, total=3))
    with _as(client, people["owner"]).websocket_connect(f"/ws/jobs/{job}?after={first}") as ws:
        replayed = ws.receive_json()
        assert replayed["event"] == {"type": "step", "step": 2, "total": 3}
        queued = ws.receive_json()  # no news: the row says it is queued, second in line
        assert queued == {"id": replayed["id"], "event": {"type": "queue", "position": 2}}
        bus.publish(job, StepEvent(step=3, total=3))
        final_id = bus.publish(job, StateEvent(state="succeeded"))
        assert ws.receive_json()["event"]["step"] == 3
        assert ws.receive_json() == {
            "id": final_id,
            "event": {"type": "state", "state": "succeeded"},
        }
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1000


def test_websocket_sends_the_final_state_from_the_row_when_its_event_is_gone(
    client, people
) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        job = session.get(Job, people["job"])
        assert job is not None
        job.state, job.error, job.finished_at = JobState.failed, "out of memory", utcnow()
    with _as(client, people["owner"]).websocket_connect(f"/ws/jobs/{people['job']}") as ws:
        event = ws.receive_json()["event"]
        assert (event["state"], event["error"]) == ("failed", "out of memory")


@pytest.mark.parametrize(
    ("who", "headers", "code"),
    [("other", {}, 4404), (None, {}, 4404), ("owner", {"origin": "https://evil.example"}, 4403)],
)
def test_websocket_refuses_strangers_and_foreign_origins(
    client, people, who, headers, code
) -> None:  # type: ignore[no-untyped-def]
    ws_client = _as(client, people[who] if who else None)
    with (
        ws_client.websocket_connect(f"/ws/jobs/{people['job']}", headers=headers) as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_json()
    assert closed.value.code == code


def test_websocket_accepts_our_own_origin(client, people) -> None:  # type: ignore[no-untyped-def]
    get_progress_bus().publish(str(people["job"]), StateEvent(state="canceled"))
    headers = {"origin": get_settings().origin}
    ws_client = _as(client, people["owner"])
    with ws_client.websocket_connect(f"/ws/jobs/{people['job']}", headers=headers) as ws:
        assert ws.receive_json()["event"]["state"] == "canceled"
