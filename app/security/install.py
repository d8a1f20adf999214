"""`install_security(app)`: every web-side defence, wired in one call from create_app."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.security.bodylimit import BodyLimitMiddleware
from app.security.csrf import CSRFMiddleware
from app.security.docs import install_local_docs
from app.security.headers import SecurityHeadersMiddleware
from app.uploads.images import UploadRejected


async def _upload_rejected(_request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, UploadRejected) else 422
    return JSONResponse({"detail": str(exc)}, status_code=status)


def install_security(app: FastAPI) -> None:
    """Body limits, CSRF checks, security headers, local API docs, upload refusals as 4xx."""
    # Added innermost first: headers wrap everything, so refusals carry them too.
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(CSRFMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_exception_handler(UploadRejected, _upload_rejected)
    install_local_docs(app)
