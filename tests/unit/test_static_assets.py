"""Static assets: versioned URLs in pages, cached for a year; plain URLs revalidated."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from app.static_assets import static_version


def test_pages_link_versioned_assets_that_are_cached_for_a_year(client: TestClient) -> None:
    page = client.get("/signin").text
    version = static_version()
    assert re.fullmatch(r"[0-9a-f]{12}", version)
    links = re.findall(r'(?:href|src)="(/static/[^"]+\.(?:css|js))"', page)
    assert f"/static/{version}/css/app.css" in links and f"/static/{version}/js/app.js" in links
    assert all(link.startswith(f"/static/{version}/") for link in links), links
    for link in links:
        asset = client.get(link)
        assert asset.status_code == 200, link
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        plain = client.get(link.replace(f"/{version}", ""))
        assert plain.content == asset.content and plain.headers["cache-control"] == "no-cache"
    # A module's relative imports resolve under the same version: api.js is there too.
    assert client.get(f"/static/{version}/js/api.js").status_code == 200
    stale = client.get("/static/0123456789ab/css/app.css")
    assert stale.status_code == 404  # another deploy's version is not this one's file
    assert client.get(f"/static/{version}/../pyproject.toml").status_code == 404
