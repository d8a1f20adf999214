"""A request-body size limit checked on Content-Length and again on the bytes that arrive."""

from __future__ import annotations

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings, get_settings
from app.security.asgi import header, send_json_error

MULTIPART_OVERHEAD = 1024 * 1024
"""Room for part headers and form fields on top of the file bytes themselves."""


class BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing re-raises it as a 413 (not a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"request body larger than {limit:,} bytes",
        )


def body_limit(method: str, path: str, settings: Settings) -> int:
    """The most body bytes a request to this route may send."""
    path = path.rstrip("/")
    if method == "POST" and path == "/api/concepts":
        return settings.upload_max_total_bytes + MULTIPART_OVERHEAD
    if method == "POST" and path == "/api/concepts/import":
        return settings.concept_file_max_bytes + MULTIPART_OVERHEAD
    if method == "POST" and path == "/api/generations":  # may carry one init image
        return settings.upload_max_file_bytes + MULTIPART_OVERHEAD
    return settings.request_max_body_bytes


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["method"], scope["path"], get_settings())
        declared = header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await send_json_error(send, 400, "invalid Content-Length")
                return
            if int(declared) > limit:
                await send_json_error(send, 413, BodyTooLarge(limit).detail)
                return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # chunked bodies, or a Content-Length that lied
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await send_json_error(send, exc.status_code, exc.detail)
