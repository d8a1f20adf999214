"""Dependencies shared by routes, as `Annotated` aliases (SessionDep, SettingsDep, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.db import session_scope


def get_session() -> Iterator[Session]:
    """One session per request; the one place request work is committed."""
    with session_scope() as session:
        yield session


# scope="function": commit when the route returns, BEFORE the response is sent. With the
# default ("request") FastAPI ends the dependency after sending, so a browser that follows a
# sign-up or a new concept at once could be served before the commit (seen in the e2e tests).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
