"""Hostile input through the real routes: the upload corpus, concept imports, CSRF, limits."""

from __future__ import annotations

import io
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.concepts.models import ConceptStatus
from app.config import get_settings
from app.db import session_scope
from app.jobs import queue as jobs_queue
from app.jobs.models import JobKind, JobState
from app.security.headers import CSP
from app.storage import DatabaseBlobStore
from app.users.models import User
from tests.support.conceptfiles import build, f32
from tests.support.factories import make_concept, make_job_row, make_user, session_cookie
from tests.support.hostile import OK, corpus, encode
from tests.unit.test_concept_filecheck import Exploit, shapes

CASES = corpus()
GOOD = encode(Image.new("RGB", (64, 64), (30, 120, 200)), "JPEG")


@pytest.fixture
def quiet_client(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app with job messages dropped: fits stay queued instead of running on the CPU."""
    monkeypatch.setattr(jobs_queue, "send_job_message", lambda job_id, kind: None)
    yield client


def signed_in(client: TestClient) -> uuid.UUID:
    with session_scope() as session:
        user_id = make_user(session).id
    client.cookies.clear()
    client.cookies.update(session_cookie(user_id))
    return user_id


def create_concept(client: TestClient, filename: str, data: bytes):  # type: ignore[no-untyped-def]
    files = [("images", (filename, data, "image/jpeg"))]
    files += [("images", (f"good{i}.jpg", GOOD, "image/jpeg")) for i in range(2)]
    form = {"name": "Rex", "token": f"<t{uuid.uuid4().hex[:8]}>", "superclass": "dog"}
    return client.post("/api/concepts", data=form, files=files)


def test_hostile_upload_corpus_over_http(
    quiet_client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, wrong = [], []
    for case in CASES:
        signed_in(quiet_client)  # a fresh person each time: quotas stay out of the way
        response = create_concept(quiet_client, case.filename, case.data)
        want = 202 if case.expected == OK else case.expected
        rows.append(f"{case.filename:14} {case.why:30} -> {response.status_code}")
        if response.status_code != want:
            wrong.append(f"{case.filename}: {response.status_code} != {want} {response.text[:200]}")
        elif want != 202:
            assert case.filename in response.json()["detail"]  # the message names the file
    with capsys.disabled():
        print("\nhostile uploads via POST /api/concepts:\n  " + "\n  ".join(rows))
    assert not wrong, "\n".join(wrong)


def test_stored_photo_has_no_gps_when_read_back_over_http(quiet_client: TestClient) -> None:
    signed_in(quiet_client)
    gps = next(c.data for c in CASES if c.filename == "gps.jpg")
    concept_id = create_concept(quiet_client, "gps.jpg", gps).json()["id"]
    body = quiet_client.get(f"/api/concepts/{concept_id}").json()
    stored = quiet_client.get(body["photos"][0]["url"])
    assert stored.status_code == 200 and stored.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(stored.content))
    assert not img.getexif() and not img.getexif().get_ifd(0x8825)
    assert b"SpyCam" not in stored.content and b"eXIf" not in stored.content


def test_oversized_uploads_are_413_before_any_decoding(
    embedded_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDIO_UPLOAD_MAX_FILE_BYTES", str(len(GOOD) + 10))
    get_settings.cache_clear()
    from app.main import create_app

    with TestClient(create_app()) as client:
        signed_in(client)
        response = create_concept(client, "big.jpg", GOOD + b"\0" * 100)
        assert response.status_code == 413 and "big.jpg" in response.json()["detail"]
        declared = client.post(
            "/api/concepts", content=b"x", headers={"content-length": str(200 * 2**20)}
        )
        assert declared.status_code == 413


def test_imports_refuse_pickles_without_running_them_and_forged_shapes(
    client: TestClient, tmp_path: Path
) -> None:
    owner = signed_in(client)
    with session_scope() as session:  # a concept fitted here: the base model's yardstick
        user = session.get(User, owner)
        assert user is not None
        fitted = make_concept(session, user, status=ConceptStatus.ready)
        fitted.file_blob_id = DatabaseBlobStore(session).put(build(), "application/octet-stream")
        make_job_row(
            session, JobKind.fit, owner_id=owner, concept_id=fitted.id, state=JobState.succeeded
        )
    marker = tmp_path / "pwned"

    def upload(data: bytes):  # type: ignore[no-untyped-def]
        files = {"file": ("rex.safetensors", data, "application/octet-stream")}
        return client.post("/api/concepts/import", files=files)

    assert upload(pickle.dumps(Exploit(marker), protocol=2)).status_code == 415
    assert upload(pickle.dumps(Exploit(marker), protocol=0)).status_code == 415
    assert not marker.exists()
    wide = {n: ("F32", [5], f32([1, 2, 3, 4, 5])) for n in ("token_embedding", "i_star")}
    wide |= {n: ("F32", [5], f32([1, 2, 3, 4, 5])) for n in ("e_super", "score")}
    forged = upload(build(shapes(**wide)))  # consistent file, wrong width for this model
    assert forged.status_code == 422 and "different base model" in forged.json()["detail"]
    assert upload(build(shapes(score=("F64", [4], b"\0" * 32)))).status_code == 422
    assert upload(b"\0" * (get_settings().concept_file_max_bytes + 1)).status_code == 413


def test_csrf_on_real_routes_and_headers_on_api_and_pages(client: TestClient) -> None:
    signed_in(client)
    origin = get_settings().origin
    foreign = client.post("/api/tokens", json={"name": "x"}, headers={"origin": "https://e.vil"})
    assert foreign.status_code == 403
    assert foreign.headers["content-security-policy"] == CSP
    same = client.post("/api/tokens", json={"name": "x"}, headers={"origin": origin})
    assert same.status_code == 201
    token = same.json()["token"]
    client.cookies.clear()
    bearer = client.post(
        "/api/tokens",
        json={"name": "y"},
        headers={"authorization": f"Bearer {token}", "origin": "https://e.vil"},
    )
    assert bearer.status_code == 201
    login = client.post(
        "/api/auth/login",
        json={"username": "nobody", "password": "x" * 12},
        headers={"sec-fetch-site": "cross-site"},
    )
    assert login.status_code == 403  # login CSRF too
    for path in ("/", "/signin", "/api/concepts/public", "/api/health"):
        headers = client.get(path).headers
        assert headers["content-security-policy"] == CSP, path
        assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"


def test_sign_in_is_rate_limited_with_retry_after(client: TestClient) -> None:
    body = {"username": "victim", "password": "wrong-password-123"}
    codes = [client.post("/api/auth/login", json=body).status_code for _ in range(11)]
    assert codes[:10] == [401] * 10 and codes[10] == 429
    refused = client.post("/api/auth/login", json=body)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


def test_job_quota_over_http(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs_queue, "send_job_message", lambda job_id, kind: None)
    owner = signed_in(client)
    with session_scope() as session:
        for _ in range(get_settings().max_active_jobs):
            make_job_row(session, JobKind.generate, owner_id=owner)
    response = client.post("/api/generations", json={"prompt": "a dog", "n": 1})
    assert response.status_code == 429 and "retry-after" in response.headers
    too_long = client.post("/api/generations", json={"prompt": "x" * 501})
    assert too_long.status_code == 422
