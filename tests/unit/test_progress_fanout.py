"""Sockets watching the same job share one bus read and one encoding of each event."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

from app.jobs.progress import Event
from app.jobs.tail import Message, SharedReads


class CountingBus:
    """A bus whose reads wait a little, as a blocking XREAD does, and are counted."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.reads: list[tuple[str, str | None]] = []
        self.threads: set[int] = set()

    def publish(self, job_id: str, event: Any) -> str:
        raise NotImplementedError

    def read(self, job_id: str, after: str | None, timeout_s: float) -> list[Event]:
        self.reads.append((job_id, after))
        self.threads.add(threading.get_ident())
        time.sleep(0.05)
        return [e for e in self.events if after is None or e[0] > after]


def test_two_hundred_sockets_at_one_cursor_cost_one_read_and_share_the_encoded_text() -> None:
    job = uuid.uuid4()
    bus = CountingBus([("1-1", {"type": "step", "step": 1, "total": 9})])

    reads = SharedReads()

    async def watch_all() -> list[list[Message]]:
        return await asyncio.gather(*(reads.read(bus, job, "0-0", 1.0) for _ in range(200)))

    replies = asyncio.run(watch_all())
    assert bus.reads == [(str(job), "0-0")]
    assert all(reply is replies[0] for reply in replies)
    (message,) = replies[0]
    assert json.loads(message.text) == {
        "id": "1-1",
        "event": {"type": "step", "step": 1, "total": 9},
    }
    assert reads.in_flight == 0, "a finished read is forgotten: the next one asks the bus"
    assert threading.get_ident() not in bus.threads, "the blocking read is off the event loop"


def test_sockets_at_different_cursors_or_jobs_read_on_their_own() -> None:
    job, other = uuid.uuid4(), uuid.uuid4()
    bus = CountingBus([("1-1", {"type": "step", "step": 1}), ("1-2", {"type": "step", "step": 2})])

    reads = SharedReads()

    async def watch() -> list[list[Message]]:
        return await asyncio.gather(
            reads.read(bus, job, "0-0", 1.0),
            reads.read(bus, job, "1-1", 1.0),
            reads.read(bus, other, "0-0", 1.0),
        )

    behind, ahead, elsewhere = asyncio.run(watch())
    assert sorted(bus.reads) == sorted([(str(job), "0-0"), (str(job), "1-1"), (str(other), "0-0")])
    assert [m.id for m in behind] == ["1-1", "1-2"] and [m.id for m in ahead] == ["1-2"]
    assert len(elsewhere) == 2


def test_a_canceled_watcher_does_not_cancel_the_read_the_others_wait_on() -> None:
    job = uuid.uuid4()
    bus = CountingBus([("1-1", {"type": "step", "step": 1})])

    reads = SharedReads()

    async def watch() -> list[Message]:
        leaving = asyncio.ensure_future(reads.read(bus, job, "0-0", 1.0))
        staying = asyncio.ensure_future(reads.read(bus, job, "0-0", 1.0))
        await asyncio.sleep(0.01)
        leaving.cancel()  # its socket went away mid-read
        return await staying

    assert [m.id for m in asyncio.run(watch())] == ["1-1"]
    assert len(bus.reads) == 1


def test_a_read_answer_wakes_its_socket_in_the_next_loop_iteration() -> None:
    """Under load each iteration of a web process's loop is long (every request in flight
    runs a step), so what sets progress latency is how many iterations an event waits after
    the bus has it. Here: the thread's answer is handed over in one callback, and the socket
    awaiting `read` (as `_stream` does) runs in the iteration after it. The old path (an
    asyncio Redis client, a shared task and `asyncio.shield`) took four to five."""
    job = uuid.uuid4()
    bus = CountingBus([("1-1", {"type": "step", "step": 1})])
    reads = SharedReads()
    iterations = 0
    answered_at = -1

    async def count() -> None:
        nonlocal iterations, answered_at
        while not bus.reads:
            time.sleep(0.001)  # the loop stands still while the read starts ...
        time.sleep(0.2)  # ... and until the thread has answered: only the hand-over is left
        answered_at = iterations
        while True:
            await asyncio.sleep(0)
            iterations += 1

    async def watch() -> int:
        counter = asyncio.ensure_future(count())
        messages = await reads.read(bus, job, "0-0", 1.0)
        waited = iterations - answered_at
        counter.cancel()
        assert [m.id for m in messages] == ["1-1"]
        return waited

    assert asyncio.run(watch()) == 1
