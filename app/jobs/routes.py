"""Job status, cancel, and the live progress websocket. Owners only; others get 404 / 4404."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from fastapi import APIRouter, HTTPException, WebSocket, status
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect

from app.auth.deps import OptionalUser, websocket_user
from app.config import get_settings
from app.db import database_fault, get_sessionmaker
from app.deps import SessionDep
from app.jobs import queue
from app.jobs.events import QueueEvent, StateEvent
from app.jobs.lifecycle import request_cancel
from app.jobs.models import Job, JobState
from app.jobs.progress import get_progress_bus
from app.jobs.schemas import JobOut
from app.jobs.tail import SharedReads
from app.security.websockets import websocket_origin_ok
from app.users.models import User
from app.webhooks.service import latest_delivery

router = APIRouter(tags=["jobs"])

WS_FORBIDDEN_ORIGIN = 4403
WS_NOT_FOUND = 4404
WS_POLL_S = 1.0
START_CURSOR = "0-0"
FINAL_STATES = {state.value for state in JobState if state.finished}


def _owned_job(session: Session, job_id: uuid.UUID, user: User | None) -> Job:
    job = queue.get_job(session, job_id)
    if job is None or user is None or job.owner_id != user.id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such job.")
    return job


@router.get("/api/jobs/{job_id}")
def get_job(job_id: uuid.UUID, session: SessionDep, user: OptionalUser) -> JobOut:
    """A job of yours; with a callback URL, also where its webhook stands."""
    return _job_out(session, _owned_job(session, job_id, user))


@router.post("/api/jobs/{job_id}/cancel")
def cancel_job(job_id: uuid.UUID, session: SessionDep, user: OptionalUser) -> JobOut:
    """Queued: canceled at once. Running: the worker stops within one step."""
    return _job_out(session, request_cancel(session, _owned_job(session, job_id, user)))


def _job_out(session: Session, job: Job) -> JobOut:
    webhook = latest_delivery(session, job.id) if job.callback_url else None
    return JobOut.of(job, queue.queue_position(session, job), webhook)


@dataclass
class _Status:
    state: JobState
    error: str | None
    attempts: int
    queue_position: int | None


def _status(job_id: uuid.UUID, websocket: WebSocket | None = None) -> _Status | None:
    """The job's status, or None if it does not exist (or, given a socket, is not theirs)."""
    with get_sessionmaker()() as session:
        job = queue.get_job(session, job_id)
        if job is None:
            return None
        if websocket is not None:
            user = websocket_user(websocket, session)
            session.commit()  # an API token's last_used_at
            if user is None or job.owner_id != user.id:
                return None
        return _Status(job.state, job.error, job.attempts, queue.queue_position(session, job))


_status_reads: dict[uuid.UUID, tuple[float, asyncio.Future[_Status | None]]] = {}


async def _shared_status(job_id: uuid.UUID) -> _Status | None:
    """The job's row, read at most once per WS_POLL_S for all the sockets watching it here:
    200 idle watchers of one job cost one query a second, not 200 (each was checked when it
    connected, so this read needs no user)."""
    now = time.monotonic()
    entry = _status_reads.get(job_id)
    if entry is None or now - entry[0] >= WS_POLL_S:
        for stale in [key for key, (at, _) in _status_reads.items() if now - at > 60]:
            del _status_reads[stale]  # bounded: only jobs watched in the last minute
        read = asyncio.ensure_future(run_in_threadpool(_status, job_id))
        entry = _status_reads[job_id] = (now, read)
    return await asyncio.shield(entry[1])


async def _wait_for_disconnect(websocket: WebSocket, gone: asyncio.Event) -> None:
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    finally:
        gone.set()


@router.websocket("/ws/jobs/{job_id}")
async def job_events(websocket: WebSocket, job_id: uuid.UUID, after: str | None = None) -> None:
    """Replays events after `after`, then tails them; queue positions while queued.

    Every message is `{"id": cursor, "event": {...}}`; `id` is the cursor to reconnect with
    (`?after=<id>`). Closes (1000) after the job's final state event.
    """
    await websocket.accept()  # before closing, so the browser sees our close code
    if not websocket_origin_ok(websocket, get_settings()):
        await websocket.close(WS_FORBIDDEN_ORIGIN)
        return
    if await run_in_threadpool(_status, job_id, websocket) is None:
        await websocket.close(WS_NOT_FOUND)
        return
    gone = asyncio.Event()
    watcher = asyncio.create_task(_wait_for_disconnect(websocket, gone))
    try:
        await _stream(websocket, job_id, after or START_CURSOR, gone)
    except WebSocketDisconnect:
        pass
    finally:
        watcher.cancel()


_reads = SharedReads()
"""This process's shared bus reads (one event loop per web process)."""


async def _stream(ws: WebSocket, job_id: uuid.UUID, cursor: str, gone: asyncio.Event) -> None:
    bus = get_progress_bus()
    sent_position: int | None = None
    wait_s = 0.05  # replay at once, then wait for news
    while not gone.is_set():
        events = await _reads.read(bus, job_id, cursor, wait_s)
        wait_s = WS_POLL_S
        for message in events:
            cursor, event = message.id, message.event
            await ws.send_text(message.text)
            if event.get("type") == "state" and event.get("state") in FINAL_STATES:
                await ws.close()
                return
        if events:
            continue
        try:
            status_now = await _shared_status(job_id)
        except Exception as exc:
            if database_fault(exc) is None:
                raise
            continue  # the database is away; the events (if any) still flow
        if status_now is None:
            await ws.close(WS_NOT_FOUND)
            return
        if status_now.state.finished:
            # Events are hints: the final one may be late, expired or lost. The row decides.
            late = await _reads.read(bus, job_id, cursor, 0.5)
            if late:
                continue
            final = StateEvent(
                state=status_now.state.value, error=status_now.error, attempt=status_now.attempts
            )
            await ws.send_json({"id": cursor, "event": final.model_dump(exclude_none=True)})
            await ws.close()
            return
        position = status_now.queue_position
        if position is not None and position != sent_position:
            queue_event = QueueEvent(position=position).model_dump()
            await ws.send_json({"id": cursor, "event": queue_event})
        sent_position = position
