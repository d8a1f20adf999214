"""Static assets with long-lived caching: `/static/<version>/…` URLs, `immutable` for a year.

The version is a hash of every file under static/, taken once at start-up, so a deploy that
changes any file changes every URL and browsers never use a stale one. Pages link assets
through the `static()` template function; ES modules import their neighbours by relative
path (`./api.js`), which resolves under the same versioned prefix. Unversioned `/static/…`
URLs (old links, the favicon) are still served, revalidated on each use (`no-cache` + ETag).
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app.config import REPO_ROOT

STATIC_DIR = REPO_ROOT / "static"
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


@lru_cache
def static_version(directory: Path = STATIC_DIR) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def static_url(path: str) -> str:
    """The versioned URL of a file under static/, e.g. static_url("css/app.css")."""
    return f"/static/{static_version()}/{path.lstrip('/')}"


class VersionedStaticFiles(StaticFiles):
    """Serves `/static/<current version>/x` as `x`, cached for a year; plain `/static/x` too."""

    def get_path(self, scope: Scope) -> str:
        path = super().get_path(scope)
        head, _, rest = path.partition(os.sep)
        if rest and head == static_version():
            scope["static_versioned"] = True
            return rest
        return path

    def file_response(self, *args, **kwargs) -> Response:  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        scope = args[2] if len(args) > 2 else kwargs["scope"]
        cache = IMMUTABLE if scope.get("static_versioned") else REVALIDATE
        response.headers["Cache-Control"] = cache
        return response
