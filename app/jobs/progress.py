"""The progress bus: per-job, replayable event streams.

Production uses Redis Streams (one bounded, expiring stream per job) so any web process can
serve any job's events; the embedded default keeps the same semantics in process memory.
Events are hints: the job row stays the truth.
"""

from __future__ import annotations

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

Event = tuple[str, dict[str, Any]]


class ProgressBus(Protocol):
    def publish(self, job_id: str, event: BaseModel | dict[str, Any]) -> str: ...

    def read(self, job_id: str, after: str | None, timeout_s: float) -> list[Event]:
        """Events after the id `after` (all when None), waiting up to timeout_s for one."""
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


class RedisProgressBus:
    """Redis Streams: XADD with an approximate MAXLEN and a TTL, XREAD to replay and tail."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, decode_responses=True)

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


@lru_cache
def get_progress_bus() -> ProgressBus:
    """The process-wide bus for the configured settings."""
    settings = get_settings()
    if settings.redis_url:
        return RedisProgressBus(settings.redis_url)
    return MemoryProgressBus()
