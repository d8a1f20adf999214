"""Accounts: sign up, check a password, manage personal API tokens."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.security.passwords import hash_password, needs_rehash, verify_password
from app.security.tokens import hash_token, new_token
from app.users.models import ApiToken, User

API_TOKEN_PREFIX = "pst_"
# Verified when the username is unknown, so a miss costs as long as a wrong password.
_DUMMY_HASH = hash_password("not-a-real-password")


class UsernameTaken(Exception):
    pass


def normalize(username: str) -> str:
    return username.strip().lower()


def sign_up(session: Session, username: str, password: str) -> User:
    name = normalize(username)
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise UsernameTaken(name)
    user = User(username=name, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The user for these credentials, or None (same work either way)."""
    user = session.scalar(select(User).where(User.username == normalize(username)))
    if user is None:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password):
        return None
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def create_token(session: Session, user: User, name: str) -> tuple[ApiToken, str]:
    secret = new_token(API_TOKEN_PREFIX)
    token = ApiToken(user_id=user.id, name=name, token_hash=hash_token(secret))
    session.add(token)
    session.flush()
    return token, secret


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at)
        )
    )


def delete_token(session: Session, user: User, token_id: uuid.UUID) -> bool:
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user.id:
        return False
    session.delete(token)
    return True
