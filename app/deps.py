"""Dependencies shared by routes, as `Annotated` aliases (SessionDep, SettingsDep, ...)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.config import Settings, get_settings
from app.db import get_sessionmaker
from app.readcache import holds_connection


async def get_session() -> AsyncIterator[Session]:
    """One session per request; the one place request work is committed.

    Opened on the event loop (a session does no I/O until first used) and committed, rolled
    back or closed in the thread pool only if it was used: a page answered from the read
    cache never touches the database, and costs no thread hand-off here.
    """
    session = get_sessionmaker()()
    try:
        yield session
        if _used(session):
            await run_in_threadpool(session.commit)
    except BaseException:
        if _used(session):
            await run_in_threadpool(session.rollback)
        raise
    finally:
        if _used(session):
            await run_in_threadpool(session.close)
        else:
            session.close()


def _used(session: Session) -> bool:
    """Whether closing `session` may do I/O: a transaction is open or changes are pending."""
    return holds_connection(session) or bool(session.new or session.dirty or session.deleted)


# scope="function": commit when the route returns, BEFORE the response is sent. With the
# default ("request") FastAPI ends the dependency after sending, so a browser that follows a
# sign-up or a new concept at once could be served before the commit (seen in the e2e tests).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
