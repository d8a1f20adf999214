"""A request's writes are committed before its response starts (no read-after-write race)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import select

from app.config import get_settings
from app.db import session_scope
from app.users.models import User


def test_signup_is_committed_before_the_response_is_sent(embedded_env: Path) -> None:
    from app.main import create_app

    app = create_app()
    origin = get_settings().origin
    body = json.dumps({"username": "early", "password": "long enough"}).encode()
    seen: dict[str, object] = {}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            seen["status"] = message["status"]
            with session_scope() as session:  # another connection, as the next request would
                seen["user"] = session.scalar(select(User.username).where(User.username == "early"))

    host = origin.split("://", 1)[1]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/auth/signup", "raw_path": b"/api/auth/signup",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
        "server": (host.split(":")[0], int(host.split(":")[1])),
        "headers": [
            (b"host", host.encode()), (b"origin", origin.encode()),
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        ],
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert seen == {"status": 201, "user": "early"}
