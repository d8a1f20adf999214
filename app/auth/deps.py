"""Who is asking: a session cookie (browser) or a Bearer API token (scripts)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, WebSocket, status
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from starlette.concurrency import run_in_threadpool

from app.auth.sessions import SESSION_COOKIE, read_session_value
from app.config import get_settings
from app.db import session_scope
from app.deps import SessionDep
from app.orm import utcnow
from app.readcache import MISSING, read_cache
from app.security.tokens import hash_token
from app.users.models import ApiToken, User


def _credentials_key(cookie: str | None, authorization: str | None) -> tuple | None:
    """The read-cache key of the credentials → user lookup (None: no usable credentials)."""
    if authorization and authorization.lower().startswith("bearer "):
        return ("credentials", "token", hash_token(authorization.split(" ", 1)[1].strip()))
    if cookie:
        user_id = read_session_value(get_settings().secret(), cookie)
        if user_id is not None:
            return ("credentials", "user", user_id)
    return None


def user_from_credentials(
    session: Session,
    cookie: str | None,
    authorization: str | None,
    request: Request | None = None,
) -> User | None:
    """Resolve a user from a session cookie value or an `Authorization: Bearer` header.

    The lookup is cached until the next committed write (app.readcache): revoking a token,
    deleting an account or touching a token all commit, so a cached answer is never stale.
    A token and its user are read in one query.
    """
    key = _credentials_key(cookie, authorization)
    if key is None:
        return None
    if key[1] == "token":
        token_hash = key[2]
        found = read_cache.get_or_compute(
            key, lambda: _token_user(session, token_hash), request=request
        )
        if found is None:
            return None
        token_id, last_used_at, user = found
        _touch(token_id, last_used_at)
        return _attach(session, user)
    user_id = key[2]
    user = read_cache.get_or_compute(
        key, lambda: _user_columns(session.get(User, user_id)), request=request
    )
    return _attach(session, user) if user is not None else None


def _cached_user(
    session: Session, cookie: str | None, authorization: str | None, request: Request
) -> Any:
    """The user when the read cache answers without I/O (None: signed out), else MISSING."""
    key = _credentials_key(cookie, authorization)
    if key is None:
        return None
    found = read_cache.peek(key, request)
    if found is MISSING or found is None:
        return found
    if key[1] == "token":
        token_id, last_used_at, found = found
        if _touch_due(token_id, last_used_at):
            return MISSING  # the touch writes: the thread pool's path does it
    return _attach(session, found)


def _token_user(session: Session, token_hash: str) -> tuple[Any, Any, dict[str, Any]] | None:
    row = session.execute(
        select(ApiToken.id, ApiToken.last_used_at, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == token_hash)
    ).first()
    return None if row is None else (row[0], row[1], _user_columns(row[2]))


def _user_columns(user: User | None) -> dict[str, Any] | None:
    if user is None:
        return None
    return {attr.key: getattr(user, attr.key) for attr in User.__mapper__.column_attrs}


def _attach(session: Session, columns: dict[str, Any]) -> User:
    """The user as a persistent object of this session, from cached columns, without a query
    (the session's own copy if it already holds one)."""
    held = session.identity_map.get(session.identity_key(User, columns["id"]))
    if held is not None:
        return held  # type: ignore[return-value]
    user = User(**columns)
    make_transient_to_detached(user)
    return session.merge(user, load=False)


TOUCH_EVERY_S = 60


_touched: dict[Any, float] = {}


def _touch(token_id: Any, last_used_at: datetime | None) -> None:
    """Record when a token was last used, at most once a minute, in its own short transaction.

    Updating the row inside the request's transaction held its lock until the request ended:
    concurrent requests with one token queued behind it, filled the thread pool and stalled
    the server (the load test at 50 clients). A cached lookup can show an old `last_used_at`
    to many requests at once: this process then touches once, not once per request.
    """
    if not _touch_due(token_id, last_used_at):
        return
    now = utcnow()
    _touched[token_id] = time.monotonic()
    with session_scope() as touch:
        touch.execute(
            update(ApiToken)
            .where(
                ApiToken.id == token_id,
                or_(
                    ApiToken.last_used_at.is_(None),
                    ApiToken.last_used_at < now - timedelta(seconds=TOUCH_EVERY_S),
                ),
            )
            .values(last_used_at=now)
        )


def _touch_due(token_id: Any, last_used_at: datetime | None) -> bool:
    if last_used_at and (utcnow() - last_used_at).total_seconds() < TOUCH_EVERY_S:
        return False
    return time.monotonic() - _touched.get(token_id, -TOUCH_EVERY_S) >= TOUCH_EVERY_S


async def optional_user(request: Request, session: SessionDep) -> User | None:
    """The signed-in user or None; answered on the event loop when the read cache knows the
    credentials, else looked up in the thread pool."""
    cookie, authorization = (
        request.cookies.get(SESSION_COOKIE),
        request.headers.get("authorization"),
    )
    user = _cached_user(session, cookie, authorization, request)
    if user is MISSING:
        user = await run_in_threadpool(
            user_from_credentials, session, cookie, authorization, request
        )
    return user


async def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Sign in first.")
    return user


def websocket_user(websocket: WebSocket, session: Session) -> User | None:
    return user_from_credentials(
        session, websocket.cookies.get(SESSION_COOKIE), websocket.headers.get("authorization")
    )


OptionalUser = Annotated[User | None, Depends(optional_user)]
CurrentUser = Annotated[User, Depends(current_user)]
