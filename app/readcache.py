"""Read cache: answers computed from the database, reused until the next committed write.

Every commit of a session that wrote anything bumps the *data version* (after the commit, so
a reader that sees the new version also sees the new rows). Cached answers are stored under
the version they were computed at and used only while it is still current, so a cached read
is never stale after a commit. The version is shared: production keeps it in Redis (INCR;
every web process and worker bumps the same key), the embedded default in this process (its
worker runs here too).

What may be cached is a pure function of (database, request): pages and lists keyed by the
viewer (`access.Viewer.key`) and the URL, and the credentials → user lookup. Authorization is still
decided by `app.concepts.access` whenever an answer is computed; a cached answer is that
decision replayed for the same viewer on the same data.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from functools import lru_cache
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from app.config import get_settings

log = logging.getLogger(__name__)

VERSION_KEY = "studio:data_version"
MAX_ENTRIES = 2048
_READ_ONLY = ("SELECT", "SHOW", "SET", "PRAGMA", "EXPLAIN")


_local_numbers = itertools.count(1)


class LocalVersion:
    """The embedded default: one process, so an in-process counter is the whole truth."""

    def __init__(self) -> None:
        self._value = next(_local_numbers)

    def current(self) -> int | None:
        return self._value

    def bump(self) -> None:
        self._value = next(_local_numbers)


class RedisVersion:
    """Production: one Redis key that every process bumps (INCR) and reads (GET).

    Redis unreachable: `current` answers None (nothing is cached or served from cache). A
    bump that failed is owed: made before this process next reads the version, so no cache
    outlives the write by more than Redis's absence. A key missing (Redis restarted empty) is
    re-created from the clock, so the counter never returns to a number already seen.
    """

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._owed = False
        self._warned_at = -60.0

    def current(self) -> int | None:
        try:
            if self._owed:
                self._redis.incr(VERSION_KEY)
                self._owed = False
            value = self._redis.get(VERSION_KEY)
            if value is None:
                self._redis.set(VERSION_KEY, time.time_ns(), nx=True)
                value = self._redis.get(VERSION_KEY)
            return int(value) if value is not None else None
        except Exception as exc:  # noqa: BLE001 - a cache must never fail a request
            self._warn(f"data version unreadable ({exc.__class__.__name__}): not caching")
            return None

    def bump(self) -> None:
        try:
            self._redis.incr(VERSION_KEY)
        except Exception as exc:  # noqa: BLE001
            self._owed = True
            self._warn(f"data version bump failed ({exc.__class__.__name__}): owed")

    def _warn(self, message: str) -> None:
        if time.monotonic() - self._warned_at >= 60:  # once a minute, not once a request
            self._warned_at = time.monotonic()
            log.warning(message)


def data_version() -> LocalVersion | RedisVersion:
    """The data version of the current settings (Redis when there is one)."""
    return _version_for(get_settings().redis_url)


@lru_cache
def _version_for(redis_url: str) -> LocalVersion | RedisVersion:
    return RedisVersion(redis_url) if redis_url else LocalVersion()


MISSING: Any = object()
"""`VersionedCache.peek`'s answer when nothing current is cached for the key."""


class _Flight:
    """One computation in progress, which other askers of the same key wait for."""

    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self.done = threading.Event()
        self.value: Any = MISSING


class VersionedCache:
    """Values keyed by anything hashable, valid for one data version (then all dropped).

    A miss is computed once: concurrent askers of the same key at the same version wait for
    the first one's answer instead of computing it again. After a write, 50 clients on one
    page each rendered it (the browse page's p95 went from 60 to 385 ms under wrk whenever an
    API token's once-a-minute touch bumped the version).
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, wait_s: float = 10.0) -> None:
        self._lock = threading.Lock()
        self._version: int | None = None
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._flights: dict[tuple[int, Hashable], _Flight] = {}
        self._max = max_entries
        self._wait_s = wait_s

    def peek(self, key: Hashable, request: Request | None = None) -> Any:
        """The value cached for `key` at the current data version, or MISSING; no compute."""
        version = request_version(request) if request is not None else data_version().current()
        if version is None:
            return MISSING
        with self._lock:
            if version != self._version or key not in self._entries:
                return MISSING
            self._entries.move_to_end(key)
            return self._entries[key]

    def get_or_compute(
        self,
        key: Hashable,
        compute: Callable[[], Any],
        keep: Callable[[Any], bool] | None = None,
        request: Request | None = None,
    ) -> Any:
        """The value for `key` at the current version: cached, another caller's computation
        awaited, or `compute()` (kept when `keep` allows; `keep` None keeps everything)."""
        version = request_version(request) if request is not None else data_version().current()
        if version is None:
            return compute()
        with self._lock:
            if version != self._version:
                self._entries.clear()
                self._version = version
            elif key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            flight = self._flights.get((version, key))
            leader = flight is None or flight.owner == threading.get_ident()
            if flight is None:
                flight = self._flights[(version, key)] = _Flight()
        if not leader:
            # The same key at the same version is the same answer, computed by whoever
            # asked first; if that caller failed (or hangs), compute it here.
            if flight.done.wait(self._wait_s) and flight.value is not MISSING:
                return flight.value
            return compute()
        try:
            value = flight.value = compute()  # outside the lock: other keys go on
        finally:
            with self._lock:
                if self._flights.get((version, key)) is flight:
                    del self._flights[(version, key)]
            flight.done.set()
        if keep is not None and not keep(value):
            return value
        with self._lock:
            if self._version == version:
                self._entries[key] = value
                if len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._version = None


read_cache = VersionedCache()
_bumps_here = [0]
"""Bumps made by this process, so a request that wrote reads the version again (a racing
increment may be lost, but the count still moves)."""


def request_version(request: Request) -> int | None:
    """The data version, read once per request (one Redis round trip, not one per lookup),
    again if this process committed a write since."""
    bumps = _bumps_here[0]
    seen = getattr(request.state, "studio_data_version", None)
    if seen is None or seen[0] != bumps:
        seen = (bumps, data_version().current())
        request.state.studio_data_version = seen
    return seen[1]


# -- every committed write bumps the version -------------------------------------------------

_WROTE = "studio_wrote"
_CONNECTIONS = "studio_conn_infos"


def holds_connection(session: Session) -> bool:
    """Whether `session` (of a maker given to `track_writes`) has a database connection in
    its transaction, so ending it does I/O."""
    return bool(session.info.get(_CONNECTIONS))


def _mark_writes(conn, cursor, statement: str, *_args: object) -> None:  # type: ignore[no-untyped-def]
    if not statement.lstrip()[:8].upper().startswith(_READ_ONLY):
        conn.info[_WROTE] = True


def _forget_writes(conn) -> None:  # type: ignore[no-untyped-def]
    # An invalidated connection (the server went away mid-transaction) has no DBAPI
    # connection to hold marks, and asking for its .info raises PendingRollbackError.
    if not conn.invalidated:
        conn.info.pop(_WROTE, None)


def track_writes(maker: sessionmaker[Session]) -> None:
    """Bump the data version after each commit of `maker`'s sessions that wrote anything.

    Writes are seen where they reach the database (any INSERT/UPDATE/DELETE, ORM flush or
    Core statement); the sessions note the connections they used and, after the commit,
    bump once if one of them wrote. A rollback forgets the writes.
    """
    data_version().bump()  # a new database connection: nothing cached before may hold
    engine = maker.kw["bind"]
    if not event.contains(engine, "before_cursor_execute", _mark_writes):
        event.listen(engine, "before_cursor_execute", _mark_writes)
        event.listen(engine, "rollback", _forget_writes)

    @event.listens_for(maker, "after_begin")
    def _used(session: Session, _transaction, connection) -> None:  # type: ignore[no-untyped-def]
        session.info.setdefault(_CONNECTIONS, []).append(connection.info)

    @event.listens_for(maker, "after_commit")
    def _committed(session: Session) -> None:
        infos = session.info.pop(_CONNECTIONS, [])
        if any([info.pop(_WROTE, False) for info in infos]):
            data_version().bump()
            _bumps_here[0] += 1

    @event.listens_for(maker, "after_rollback")
    def _rolled_back(session: Session) -> None:
        for info in session.info.pop(_CONNECTIONS, []):
            info.pop(_WROTE, None)


# -- cached pages and lists, with ETag / 304 -------------------------------------------------


async def cached_response(
    request: Request, viewer: tuple, build: Callable[[], Response]
) -> Response:
    """`build()`'s response, reused for this viewer and URL until the data changes.

    A cached answer is served on the event loop; only a miss runs `build` (which queries the
    database) in the thread pool. Handing every request to a thread, as a plain `def` route
    does, made the cached pages wait behind one another for the GIL: p50 47 ms but p99 over
    2 s at 50 clients under wrk (docs/benchmarks.md). Only 200 answers are kept (a 404 page is
    cheap and must not outlive a grant). Each answer carries an ETag of (viewer, body), so a
    browser revalidates and gets 304 when nothing it can see changed; another viewer's ETag
    never matches (it hashes a different viewer).
    """
    key = ("response", viewer, request.url.path, request.url.query)

    def compute() -> tuple[int, bytes, str | None, str]:
        response = build()
        body = bytes(response.body)
        tag = hashlib.sha256(repr(viewer).encode() + b"\0" + body).hexdigest()[:32]
        return response.status_code, body, response.media_type, f'"{tag}"'

    answer = read_cache.peek(key, request)
    if answer is MISSING:
        answer = await run_in_threadpool(
            read_cache.get_or_compute, key, compute, lambda a: a[0] == 200, request
        )
    status, body, media_type, etag = answer
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Cookie, Authorization"}
    if status == 200 and etag in _if_none_match(request):
        return Response(status_code=304, headers=headers)
    return Response(body, status_code=status, media_type=media_type, headers=headers)


def _if_none_match(request: Request) -> list[str]:
    value = request.headers.get("if-none-match", "")
    return [part.strip().removeprefix("W/") for part in value.split(",") if part.strip()]
