"""The progress bus: per-job, replayable event streams.

Production uses Redis Streams (one bounded, expiring stream per job) so any web process can
serve any job's events; the embedded default keeps the same semantics in process memory.
Events are hints: the job row stays the truth.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from functools import lru_cache
from typing import Any, Protocol

from pydantic import BaseModel

from app.config import get_settings

STREAM_MAXLEN = 2000
STREAM_TTL_S = 24 * 3600
ASYNC_MAX_CONNECTIONS = 10_000
"""redis-py's asyncio pool allows 100 by default; past that, XREAD fails for socket 101."""

Event = tuple[str, dict[str, Any]]


class ProgressBus(Protocol):
    def publish(self, job_id: str, event: BaseModel | dict[str, Any]) -> str: ...

    def read(self, job_id: str, after: str | None, timeout_s: float) -> list[Event]:
        """Events after the id `after` (all when None), waiting up to timeout_s for one."""
        ...

    async def aread(self, job_id: str, after: str | None, timeout_s: float) -> list[Event]:
        """`read` for the event loop: websockets wait on it without holding a thread."""
        ...


def _as_dict(event: BaseModel | dict[str, Any]) -> dict[str, Any]:
    return event.model_dump(exclude_none=True) if isinstance(event, BaseModel) else event


def _id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


class MemoryProgressBus:
    """In-process bus with Redis-Stream-like ids, for the embedded default and unit tests."""

    def __init__(self, maxlen: int = STREAM_MAXLEN) -> None:
        self._streams: dict[str, list[Event]] = defaultdict(list)
        self._cond = threading.Condition()
        self._seq = 0
        self._maxlen = maxlen

    def publish(self, job_id: str, event: BaseModel | dict[str, Any]) -> str:
        with self._cond:
            self._seq += 1
            event_id = f"{int(time.time() * 1000)}-{self._seq}"
            stream = self._streams[job_id]
            stream.append((event_id, _as_dict(event)))
            del stream[: max(0, len(stream) - self._maxlen)]
            self._cond.notify_all()
            return event_id

    def _after(self, job_id: str, after: str | None) -> list[Event]:
        stream = self._streams.get(job_id, [])
        if after is None:
            return list(stream)
        key = _id_key(after)
        return [e for e in stream if _id_key(e[0]) > key]

    def read(self, job_id: str, after: str | None, timeout_s: float) -> list[Event]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                events = self._after(job_id, after)
                remaining = deadline - time.monotonic()
                if events or remaining <= 0:
                    return events
                self._cond.wait(remaining)

    async def aread(self, job_id: str, after: str | None, timeout_s: float) -> list[Event]:
        deadline = time.monotonic() + timeout_s
        while True:  # publishers are threads; a short poll keeps this lock-free for the loop
            with self._cond:
                events = self._after(job_id, after)
            if events or time.monotonic() >= deadline:
                return events
            await asyncio.sleep(0.05)


class RedisProgressBus:
    """Redis Streams: XADD with an approximate MAXLEN and a TTL, XREAD to replay and tail."""

    def __init__(self, url: str) -> None:
        import redis

        self._url = url
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._async: dict[int, Any] = {}

    @staticmethod
    def _key(job_id: str) -> str:
        return f"studio:progress:{job_id}"

    def publish(self, job_id: str, event: BaseModel | dict[str, Any]) -> str:
        key = self._key(job_id)
        pipe = self._redis.pipeline()
        pipe.xadd(key, {"e": json.dumps(_as_dict(event))}, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.expire(key, STREAM_TTL_S)
        event_id, _ = pipe.execute()
        return str(event_id)

    def read(self, job_id: str, after: str | None, timeout_s: float) -> list[Event]:
        block_ms = max(1, int(timeout_s * 1000))
        reply = self._redis.xread({self._key(job_id): after or "0-0"}, block=block_ms, count=500)
        return [(eid, json.loads(fields["e"])) for _, entries in reply for eid, fields in entries]

    async def aread(self, job_id: str, after: str | None, timeout_s: float) -> list[Event]:
        import redis.asyncio

        loop_id = id(asyncio.get_running_loop())  # an asyncio client belongs to one loop
        client = self._async.get(loop_id)
        if client is None:
            # Every watching socket blocks in XREAD on a connection of its own: room for many.
            client = self._async[loop_id] = redis.asyncio.Redis.from_url(
                self._url, decode_responses=True, max_connections=ASYNC_MAX_CONNECTIONS
            )
        block_ms = max(1, int(timeout_s * 1000))
        reply = await client.xread({self._key(job_id): after or "0-0"}, block=block_ms, count=500)
        return [(eid, json.loads(fields["e"])) for _, entries in reply for eid, fields in entries]


@lru_cache
def get_progress_bus() -> ProgressBus:
    """The process-wide bus for the configured settings."""
    settings = get_settings()
    if settings.redis_url:
        return RedisProgressBus(settings.redis_url)
    return MemoryProgressBus()
