"""Websocket handshakes: browsers do not apply CORS to them, so the Origin must be checked."""

from __future__ import annotations

from fastapi import WebSocket

from app.config import Settings

POLICY_VIOLATION = 1008


def websocket_origin_ok(websocket: WebSocket, settings: Settings) -> bool:
    """True for our own pages and for non-browser clients (which send no Origin)."""
    origin = websocket.headers.get("origin")
    return origin is None or origin.rstrip("/") == settings.origin


async def check_websocket_origin(websocket: WebSocket, settings: Settings) -> bool:
    """Close a cross-site handshake with 1008 before accepting it; False when closed.

    Call first in a websocket route, then authenticate (`app.auth.deps.websocket_user`):
    `if not await check_websocket_origin(websocket, settings): return`.
    """
    if websocket_origin_ok(websocket, settings):
        return True
    await websocket.close(code=POLICY_VIOLATION, reason="cross-site websocket refused")
    return False
