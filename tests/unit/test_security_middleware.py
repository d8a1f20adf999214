"""Body limits, CSRF, security headers and local API docs, on a small app and the real one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, UploadFile, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from app.config import get_settings
from app.security.headers import CSP
from app.security.install import install_security
from app.security.websockets import check_websocket_origin
from app.uploads.images import UploadRejected
from app.uploads.streaming import read_upload_files

FOREIGN = "https://evil.example"


def small_app() -> FastAPI:
    app = FastAPI()
    install_security(app)

    @app.post("/api/echo")
    def echo(body: dict[str, str]) -> dict[str, str]:
        return body

    @app.post("/api/concepts")
    def upload(photos: list[UploadFile]) -> dict[str, int]:
        files = read_upload_files(photos)
        return {"files": len(files), "bytes": sum(len(d) for _, d in files)}

    return app


@pytest.fixture
def small(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("STUDIO_UPLOAD_MAX_FILES", "3")
    monkeypatch.setenv("STUDIO_UPLOAD_MAX_FILE_BYTES", "1000")
    monkeypatch.setenv("STUDIO_UPLOAD_MAX_TOTAL_BYTES", "2500")
    monkeypatch.setenv("STUDIO_REQUEST_MAX_BODY_BYTES", "2000")
    get_settings.cache_clear()
    with TestClient(small_app()) as client:
        yield client


def photos(*sizes: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("photos", (f"p{i}.jpg", b"x" * n, "image/jpeg")) for i, n in enumerate(sizes)]


def test_uploads_within_limits_pass(small: TestClient) -> None:
    response = small.post("/api/concepts", files=photos(1000, 1000))
    assert response.status_code == 200, response.text
    assert response.json() == {"files": 2, "bytes": 2000}


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ((1001,), "p0.jpg: larger than 1,000 bytes"),
        ((900, 900, 900), "together are larger than 2,500"),
        ((1, 1, 1, 1), "too many files (4; at most 3)"),
    ],
)
def test_upload_limits_answer_413(small: TestClient, sizes: tuple[int, ...], message: str) -> None:
    response = small.post("/api/concepts", files=photos(*sizes))
    assert response.status_code == 413
    assert message in response.json()["detail"]


def test_body_limit_uses_content_length_before_reading(small: TestClient) -> None:
    response = small.post("/api/echo", content=b"{}", headers={"content-length": "999999"})
    assert response.status_code == 413
    assert response.headers["x-content-type-options"] == "nosniff"


def test_body_limit_counts_streamed_bytes_without_content_length(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # a generator body is sent chunked, with no length
        yield b'{"a": "'
        for _ in range(100):
            yield b"y" * 100
        yield b'"}'

    response = small.post(
        "/api/echo", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413, response.text
    ok = small.post("/api/echo", json={"a": "b"})
    assert ok.status_code == 200 and ok.json() == {"a": "b"}


def test_cross_site_cookie_post_is_refused_same_origin_and_bearer_pass(small: TestClient) -> None:
    origin = get_settings().origin
    small.cookies.set("studio_session", "some-session")
    post = lambda **h: small.post("/api/echo", json={"a": "b"}, headers=h).status_code  # noqa: E731
    assert post(origin=FOREIGN) == 403
    assert post(origin="null") == 403
    assert post(**{"sec-fetch-site": "cross-site"}) == 403
    assert post(**{"sec-fetch-site": "same-site"}) == 403
    assert post(origin=origin) == 200
    assert post(origin=origin, **{"sec-fetch-site": "same-origin"}) == 200
    assert post(authorization="Bearer pst_x", origin=FOREIGN) == 200
    assert post() == 200  # no browser headers: not a browser, nothing ambient to forge
    assert small.get("/docs", headers={"origin": FOREIGN}).status_code == 200  # safe method


def test_security_headers_on_pages_api_and_errors(client: TestClient) -> None:
    for path, status in (("/", 200), ("/api/health", 200), ("/nope", 404)):
        response = client.get(path)
        assert response.status_code == status
        headers = response.headers
        assert headers["content-security-policy"] == CSP
        assert "'unsafe-inline'" not in CSP and "script-src 'self';" in CSP
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
        assert "strict-transport-security" not in headers  # embedded: plain http


def test_hsts_in_production(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "ENV": "production",
        "SECRET_KEY": "k",
        "DATABASE_URL": "sqlite://",
        "REDIS_URL": "redis://127.0.0.1:1",
    }.items():
        monkeypatch.setenv(f"STUDIO_{name}", value)
    get_settings.cache_clear()
    response = TestClient(small_app()).get("/docs")
    assert response.headers["strict-transport-security"].startswith("max-age=63072000")


def test_docs_work_offline_under_a_csp_without_inline_scripts(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp
    assert "<script>" not in page.text and "cdn" not in page.text.lower()
    for src in (
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/docs/assets/init.js",
    ):
        assert src in page.text
        asset = client.get(src)
        assert asset.status_code == 200 and len(asset.content) > 100, src
    assert client.get("/docs/assets/..%2Fpyproject.toml").status_code == 404
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200


def test_docs_list_each_operation_under_one_tag(client: TestClient) -> None:
    """/docs showed the token routes twice, under "auth" and "tokens" (the router's tag and
    the route's added up)."""
    paths = client.get("/openapi.json").json()["paths"]
    tags = {
        f"{m.upper()} {p}": op.get("tags", []) for p, ops in paths.items() for m, op in ops.items()
    }
    assert all(len(t) == 1 for t in tags.values()), {k: t for k, t in tags.items() if len(t) != 1}
    assert tags["GET /api/tokens"] == ["tokens"] and tags["POST /api/auth/login"] == ["auth"]


def test_upload_refusals_raised_anywhere_become_their_4xx(small: TestClient) -> None:
    app = small.app
    assert isinstance(app, FastAPI)

    @app.post("/api/raise")
    def refuse() -> None:
        raise UploadRejected("x.jpg: not an image we accept", status_code=415)

    response = small.post("/api/raise")
    assert response.status_code == 415 and response.json() == {
        "detail": "x.jpg: not an image we accept"
    }


def test_websocket_handshake_from_a_foreign_origin_is_refused(embedded_env: Path) -> None:
    app = FastAPI()

    @app.websocket("/ws/echo")
    async def echo(websocket: WebSocket) -> None:
        if not await check_websocket_origin(websocket, get_settings()):
            return
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    client = TestClient(app)
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/ws/echo", headers={"origin": FOREIGN}),
    ):
        pass
    assert refused.value.code == 1008
    for headers in ({"origin": get_settings().origin}, {}):
        with client.websocket_connect("/ws/echo", headers=headers) as ws:
            assert ws.receive_text() == "hello"
