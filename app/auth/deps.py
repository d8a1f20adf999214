"""Who is asking: a session cookie (browser) or a Bearer API token (scripts)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket, status
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.auth.sessions import SESSION_COOKIE, read_session_value
from app.config import get_settings
from app.db import session_scope
from app.deps import SessionDep
from app.orm import utcnow
from app.security.tokens import hash_token
from app.users.models import ApiToken, User


def user_from_credentials(
    session: Session, cookie: str | None, authorization: str | None
) -> User | None:
    """Resolve a user from a session cookie value or an `Authorization: Bearer` header."""
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization.split(" ", 1)[1].strip()
        api_token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        if api_token is None:
            return None
        _touch(api_token)
        return session.get(User, api_token.user_id)
    if cookie:
        user_id = read_session_value(get_settings().secret(), cookie)
        if user_id is not None:
            return session.get(User, user_id)
    return None


TOUCH_EVERY_S = 60


def _touch(api_token: ApiToken) -> None:
    """Record when a token was last used, at most once a minute, in its own short transaction.

    Updating the row inside the request's transaction held its lock until the request ended:
    concurrent requests with one token queued behind it, filled the thread pool and stalled
    the server (the load test at 50 clients).
    """
    now = utcnow()
    if api_token.last_used_at and (now - api_token.last_used_at).total_seconds() < TOUCH_EVERY_S:
        return
    with session_scope() as touch:
        touch.execute(
            update(ApiToken)
            .where(
                ApiToken.id == api_token.id,
                or_(
                    ApiToken.last_used_at.is_(None),
                    ApiToken.last_used_at < now - timedelta(seconds=TOUCH_EVERY_S),
                ),
            )
            .values(last_used_at=now)
        )


def optional_user(request: Request, session: SessionDep) -> User | None:
    return user_from_credentials(
        session, request.cookies.get(SESSION_COOKIE), request.headers.get("authorization")
    )


def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Sign in first.")
    return user


def websocket_user(websocket: WebSocket, session: Session) -> User | None:
    return user_from_credentials(
        session, websocket.cookies.get(SESSION_COOKIE), websocket.headers.get("authorization")
    )


OptionalUser = Annotated[User | None, Depends(optional_user)]
CurrentUser = Annotated[User, Depends(current_user)]
