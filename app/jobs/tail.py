"""Tailing a job's progress events for websockets: one bus read per (job, cursor), on a thread.

Every socket of this process that waits at the same place in the same job's events shares one
bus read and one JSON encoding of each event (200 watchers of a fit cost one XREAD per event,
not 200). The read blocks on a thread of its own, and its answer is handed to each waiting
socket's own future in a single event-loop callback, so a socket sends an event two loop
iterations after the bus has it. Under load every iteration of a busy loop is long (about the
time each in-flight request takes, times the number in flight), so the number of hand-offs is
what sets progress latency: an asyncio Redis client, a shared task and `asyncio.shield` cost
four to five iterations (p95 145-220 ms at 50 clients under wrk, 2026-12-07).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.jobs.progress import Event, ProgressBus

log = logging.getLogger(__name__)

READ_THREADS = 256
"""Distinct (job, cursor) reads one web process can have in flight; each holds a thread (and,
on Redis, a connection) for at most the wait it was given. Past this, reads queue."""

_JSON: dict[str, Any] = {"separators": (",", ":"), "ensure_ascii": False}  # as send_json


@dataclass(frozen=True)
class Message:
    id: str
    event: dict[str, Any]
    text: str
    """The websocket message, encoded once for every socket that sends it."""


def read_messages(bus: ProgressBus, job_id: uuid.UUID, cursor: str, wait_s: float) -> list[Message]:
    """The bus's events after `cursor` (blocking up to wait_s); none while the bus (Redis) is
    away, so the socket stays open and learns how the job ends from its row."""
    try:
        events: list[Event] = bus.read(str(job_id), cursor, wait_s)
    except Exception as exc:
        log.warning("progress bus unreachable for job %s: %s", job_id, exc.__class__.__name__)
        time.sleep(wait_s)
        return []
    return [
        Message(event_id, event, json.dumps({"id": event_id, "event": event}, **_JSON))
        for event_id, event in events
    ]


_Key = tuple[asyncio.AbstractEventLoop, uuid.UUID, str]


@dataclass
class SharedReads:
    """Bus reads shared by the sockets of a web process (keyed by event loop as well, so an
    answer is only handed to the loop that asked)."""

    threads: int = READ_THREADS
    _executor: ThreadPoolExecutor | None = None
    _waiting: dict[_Key, list[asyncio.Future[list[Message]]]] = field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    async def read(
        self, bus: ProgressBus, job_id: uuid.UUID, cursor: str, wait_s: float
    ) -> list[Message]:
        """The events after `cursor`, from the read already in flight for it if there is one."""
        loop = asyncio.get_running_loop()
        mine: asyncio.Future[list[Message]] = loop.create_future()
        key = (loop, job_id, cursor)
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = []
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads, "progress-read")
            done = self._executor.submit(read_messages, bus, job_id, cursor, wait_s)
            done.add_done_callback(lambda d: self._hand_over(loop, key, d))
        waiting.append(mine)
        try:
            return await mine
        finally:
            if not mine.done() and mine in waiting:  # canceled: the others still wait
                waiting.remove(mine)

    def _hand_over(
        self, loop: asyncio.AbstractEventLoop, key: _Key, done: Future[list[Message]]
    ) -> None:
        """On the read's thread: wake the loop once for all the sockets waiting for it."""
        try:
            loop.call_soon_threadsafe(self._answer, key, done)
        except RuntimeError:  # the loop has closed (shutdown, a test's loop): nobody waits
            self._waiting.pop(key, None)

    def _answer(self, key: _Key, done: Future[list[Message]]) -> None:
        """On the loop: one callback hands the read's answer to every socket waiting for it."""
        for waiter in self._waiting.pop(key, []):
            if waiter.done():
                continue
            if done.exception() is not None:
                waiter.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                waiter.set_result(done.result())
