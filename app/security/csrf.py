"""Cross-site request forgery protection by Origin and `Sec-Fetch-Site`, no tokens needed.

The rule follows Go's `net/http.CrossOriginProtection`: a state-changing request is refused
when the browser says it came from another site (`Sec-Fetch-Site`) or, for browsers without
that header, when its `Origin` is not ours. A request carrying neither header does not come
from a (modern) browser, so no ambient cookie was forged into it and it passes. Requests
authenticated with `Authorization: Bearer` are exempt: browsers never add that header on
their own, and a Bearer header stops the session cookie from being consulted at all.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.config import Settings, get_settings
from app.security.asgi import header, send_json_error

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_same_origin(origin: str | None, fetch_site: str | None, settings: Settings) -> bool:
    """Whether a browser request's headers show it was made by our own pages."""
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")  # "none": typed URL, bookmark
    if origin is None:
        return True  # not a browser: nothing ambient to forge
    return origin.rstrip("/") == settings.origin


class CSRFMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        authorization = header(scope, b"authorization") or ""
        if not authorization.lower().startswith("bearer ") and not is_same_origin(
            header(scope, b"origin"), header(scope, b"sec-fetch-site"), get_settings()
        ):
            await send_json_error(send, 403, "cross-site request refused")
            return
        await self.app(scope, receive, send)
