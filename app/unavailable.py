"""503, never a 500 trace, while the database is down or full: the request can be retried."""

from __future__ import annotations

import html
import logging

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import DBAPIError

from app.db import database_fault

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
MESSAGES = {
    "unavailable": "The database is not reachable right now. Nothing was lost; "
    "please try again in a moment.",
    "disk_full": "The server's storage is full, so nothing could be saved. Nothing already "
    "saved was lost; please try again later.",
}


async def _database_fault(request: Request, exc: Exception) -> Response:
    fault = database_fault(exc)
    if fault is None:
        raise exc  # any other database error is a bug: the server's 500
    log.warning("%s %s: database %s (%s)", request.method, request.url.path, fault, exc.__class__)
    message = MESSAGES[fault]
    headers = {"Retry-After": str(RETRY_AFTER_S)}
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": message}, status_code=503, headers=headers)
    page = (
        "<!doctype html><meta charset=utf-8><title>Unavailable · Perfusion Studio</title>"
        f"<h1>Temporarily unavailable</h1><p>{html.escape(message)}</p>"
    )
    return HTMLResponse(page, status_code=503, headers=headers)


def install_database_faults(app: FastAPI) -> None:
    app.add_exception_handler(DBAPIError, _database_fault)
