"""/docs: Swagger UI 5 (OpenAPI 3.1) from the fastapi-offline package, no CDN, no inline script.

fastapi-offline ships the Swagger UI 5 bundle; its own page has an inline script, which the
strict CSP forbids, so this module serves its files behind a page whose init code is a file.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from app.security.headers import CSP

SWAGGER_UI_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
# Swagger UI's React components set inline style attributes.
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
INIT_JS = """window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.openapi,
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  deepLinking: true,
});
"""


def _page(title: str, docs_url: str, openapi_url: str) -> str:
    title, base, spec = (escape(v) for v in (title, docs_url, openapi_url))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} – API docs</title>
<link rel="stylesheet" href="{base}/assets/swagger-ui.css"></head>
<body><div id="swagger-ui" data-openapi="{spec}"></div>
<script src="{base}/assets/swagger-ui-bundle.js"></script>
<script src="{base}/assets/init.js"></script></body></html>
"""


def install_local_docs(app: FastAPI) -> None:
    """Replace FastAPI's CDN-based /docs and /redoc with a local, CSP-clean /docs."""
    if app.docs_url is None or app.openapi_url is None:
        return
    dropped = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    app.router.routes[:] = [
        r for r in app.router.routes if not (isinstance(r, Route) and r.path in dropped)
    ]
    app.redoc_url = None
    page = _page(app.title, app.docs_url, app.openapi_url)

    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": DOCS_CSP})

    async def asset(name: str) -> Response:
        if name == "init.js":
            return Response(INIT_JS, media_type="text/javascript")
        if name not in ASSETS:
            raise HTTPException(404)
        return FileResponse(
            SWAGGER_UI_DIR / name,
            media_type=ASSETS[name],
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.add_api_route(app.docs_url, docs, include_in_schema=False)
    app.add_api_route(app.docs_url + "/assets/{name}", asset, include_in_schema=False)
