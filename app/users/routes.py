"""Sign up / in / out (session cookie) and personal API tokens (Bearer, for scripts)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Request, Response, status

from app.auth.deps import CurrentUser
from app.auth.sessions import SESSION_COOKIE, SESSION_MAX_AGE_S, make_session_value
from app.config import Settings
from app.deps import SessionDep, SettingsDep
from app.security.ratelimit import enforce_auth_rate
from app.users import service
from app.users.models import User
from app.users.schemas import Credentials, LoginIn, NewTokenOut, TokenIn, TokenOut, UserOut

router = APIRouter()  # tags per route: a router tag would list the token routes twice


def set_session_cookie(response: Response, settings: Settings, user: User) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        make_session_value(settings.secret(), user.id),
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=settings.env == "production",
        path="/",
    )


def _user_out(user: User) -> UserOut:
    return UserOut(id=user.id, username=user.username, created_at=user.created_at)


@router.post("/api/auth/signup", status_code=status.HTTP_201_CREATED, tags=["auth"])
def signup(
    body: Credentials,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    response: Response,
) -> UserOut:
    """Create an account and sign it in (sets the `studio_session` cookie)."""
    enforce_auth_rate(request, body.username, "signup", settings)
    try:
        user = service.sign_up(session, body.username, body.password)
    except service.UsernameTaken:
        raise HTTPException(status.HTTP_409_CONFLICT, "That username is taken.") from None
    set_session_cookie(response, settings, user)
    return _user_out(user)


@router.post("/api/auth/login", tags=["auth"])
def login(
    body: LoginIn, session: SessionDep, settings: SettingsDep, request: Request, response: Response
) -> UserOut:
    """Sign in (sets the `studio_session` cookie). Failures say nothing about which part."""
    enforce_auth_rate(request, body.username, "login", settings)
    user = service.authenticate(session, body.username, body.password)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Wrong username or password.")
    set_session_cookie(response, settings, user)
    return _user_out(user)


@router.post("/api/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
def logout(settings: SettingsDep) -> Response:
    """Sign out (clears the session cookie)."""
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="lax",
        secure=settings.env == "production",
    )
    return response


@router.get("/api/auth/me", tags=["auth"])
def me(user: CurrentUser) -> UserOut:
    """The signed-in account."""
    return _user_out(user)


@router.post("/api/tokens", status_code=status.HTTP_201_CREATED, tags=["tokens"])
def create_token(body: TokenIn, user: CurrentUser, session: SessionDep) -> NewTokenOut:
    """A personal API token for scripts; the secret is returned only this once."""
    token, secret = service.create_token(session, user, body.name)
    return NewTokenOut(id=token.id, name=token.name, created_at=token.created_at, token=secret)


@router.get("/api/tokens", tags=["tokens"])
def list_tokens(user: CurrentUser, session: SessionDep) -> list[TokenOut]:
    return [
        TokenOut(id=t.id, name=t.name, created_at=t.created_at, last_used_at=t.last_used_at)
        for t in service.list_tokens(session, user)
    ]


@router.delete("/api/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["tokens"])
def delete_token(token_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    if not service.delete_token(session, user, token_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Token not found.")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
