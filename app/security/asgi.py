"""Small helpers shared by the pure-ASGI security middlewares."""

from __future__ import annotations

import json

from starlette.types import Scope, Send


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (name in lower case), decoded as latin-1."""
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def send_json_error(send: Send, status: int, detail: str) -> None:
    """A complete `{"detail": ...}` response, the same shape as FastAPI's HTTPException."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
