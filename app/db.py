"""Database engine and sessions; the models and their base live in `app.models` / `app.orm`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

import app.models  # noqa: F401  (every mapper must be known before the first query)
from app.config import get_settings
from app.readcache import track_writes


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets foreign keys on and a busy timeout for the in-process worker."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    # As many connections as request threads (anyio's default 40), so no request waits on the pool.
    # A server that does not answer fails a connection in seconds rather than hanging it.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=20,
        max_overflow=20,
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if settings.sqlalchemy_url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.sqlalchemy_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    maker = sessionmaker(bind=get_engine(), expire_on_commit=False)
    track_writes(maker)  # each committed write bumps the read cache's data version
    return maker


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error (workers and scripts)."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


DISK_FULL_SQLSTATE = "53100"
"""PostgreSQL's disk_full; SQLite says SQLITE_FULL ("database or disk is full")."""
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "25P03")
"""Connection exceptions, admin/crash shutdown, "the database system is starting up", and a
session the server ended for idling in a transaction (limit_idle_transactions)."""


def database_fault(exc: BaseException) -> str | None:
    """ "disk_full" or "unavailable" when `exc` is the database failing under us, else None.

    These are the faults a caller may wait out (retry later) instead of treating the request
    or job as wrong: the server restarting or unreachable, or its storage full.
    """
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate == DISK_FULL_SQLSTATE or "database or disk is full" in str(orig):
        return "disk_full"
    if exc.connection_invalidated or isinstance(exc, InterfaceError):
        return "unavailable"
    # No SQLSTATE: the client could not connect, or lost the link mid-statement.
    unavailable = sqlstate is None or str(sqlstate).startswith(_UNAVAILABLE_SQLSTATES)
    return "unavailable" if isinstance(exc, OperationalError) and unavailable else None


def limit_idle_transactions(engine: Engine, seconds: float) -> None:
    """PostgreSQL ends this engine's sessions that idle in a transaction for `seconds`.

    For workers: a worker that hangs (stopped, swapped out) inside a short transaction would
    hold its job's row lock, and the sweeper, which skips locked rows, could never hand the
    job on. Web requests keep their transaction open while they work, so they are left alone.
    """
    if engine.dialect.name != "postgresql":
        return
    timeout_ms = max(1000, int(seconds * 1000))

    @event.listens_for(engine, "connect")
    def _limit(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET idle_in_transaction_session_timeout = {timeout_ms}")
        dbapi_conn.commit()

    engine.dispose()  # connections made before this have no limit
