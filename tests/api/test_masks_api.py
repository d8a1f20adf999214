"""Subject masks over HTTP on PostgreSQL: stored beside their photos, refused clearly, and a
refused upload costs no fit."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from app.concepts.models import Concept, ConceptPhoto, ConceptStatus
from app.config import get_settings
from app.db import session_scope
from app.jobs.models import Job, JobState
from app.storage.models import Blob
from tests.support.apihelpers import create_concept
from tests.support.webdata import mask_png, photo_png
from workers.results import load_fit_inputs

PHOTOS = [("images", (f"p{i}.png", photo_png(i), "image/png")) for i in range(4)]


def _masks(**overrides: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    """One mask per photo, named like it (`p0.png`…), sent in reverse order; photo k's mask
    has 8·(k+1) white columns, so a mask paired by order instead of by name shows.
    `p0=data` replaces p0.png's bytes."""
    files = {f"p{k}.png": mask_png(8 * (k + 1)) for k in range(4)}
    files.update({f"{stem}.png": data for stem, data in overrides.items()})
    return [("masks", (name, data, "image/png")) for name, data in reversed(files.items())]


def _three_and(name: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Masks for p3, p2 and p1, and a fourth one called `name`."""
    return [*_masks()[:3], ("masks", (name, mask_png(8), "image/png"))]


def _post(client: TestClient, files: list, token: str = "<masked>"):  # type: ignore[no-untyped-def]
    data = {"name": "Rex", "token": token, "superclass": "toy", "steps": "12", "seed": "1"}
    return client.post("/api/concepts", data=data, files=files)


def _white_columns(data: bytes) -> int:
    mask = Image.open(io.BytesIO(data))
    assert mask.format == "PNG" and mask.mode == "L" and mask.size == (64, 64)
    return int((np.asarray(mask)[0] > 127).sum())


def test_masks_are_stored_beside_their_photos_paired_by_name(make_user) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    masks = [
        ("masks", ("p3.png", mask_png(16, size=(32, 32), mode="RGBA"), "image/png")),  # cut-out
        ("masks", ("p0.png", mask_png(8), "image/png")),  # greyscale
        ("masks", ("p2.png", mask_png(24, mode="1"), "image/png")),  # 1-bit
        ("masks", ("p1.webp", _webp(16), "image/webp")),  # another suffix and format
    ]
    response = _post(user, [*PHOTOS, *masks])
    assert response.status_code == 202, response.text
    with session_scope() as session:
        concept = session.get(Concept, uuid.UUID(response.json()["id"]))
        assert concept is not None and concept.settings["masked"] is True
        white = []
        for photo in concept.photos:
            assert photo.mask_blob_id is not None
            blob = session.get(Blob, photo.mask_blob_id)
            assert blob is not None and blob.content_type == "image/png"
            white.append(_white_columns(blob.data))
        assert white == [8, 16, 24, 32]  # photo k got p{k}'s mask, whatever the order sent
        inputs = load_fit_inputs(concept.id, None)  # what the worker reads: aligned with photos
        assert [_white_columns(m) for m in inputs.masks if m is not None] == [8, 16, 24, 32]
    page = user.get(f"/concepts/{concept.id}").text
    assert "masked loss: yes" in page

    plain = create_concept(user)
    with session_scope() as session:
        concept = session.get(Concept, uuid.UUID(plain["id"]))
        assert concept is not None and concept.settings["masked"] is False
        assert all(photo.mask_blob_id is None for photo in concept.photos)
        assert load_fit_inputs(concept.id, None).masks == []
    assert "masked loss: no" in user.get(f"/concepts/{plain['id']}").text


def _webp(white_columns: int) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(mask_png(white_columns))).save(out, "WEBP", lossless=True)
    return out.getvalue()


def test_fit_again_keeps_the_masks(make_user) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    response = _post(user, [*PHOTOS, *_masks()], token="<masked-again>")
    assert response.status_code == 202, response.text
    concept_id = uuid.UUID(response.json()["id"])
    with session_scope() as session:
        concept = session.get(Concept, concept_id)
        assert concept is not None
        concept.status = ConceptStatus.failed
        for job in session.scalars(select(Job).where(Job.concept_id == concept_id)):
            job.state = JobState.failed
    again = user.post(f"/api/concepts/{concept_id}/fit")
    assert again.status_code == 202, again.text
    inputs = load_fit_inputs(concept_id, None)
    assert [_white_columns(m) for m in inputs.masks if m is not None] == [8, 16, 24, 32]


def test_delete_removes_the_masks_with_the_photos(make_user) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    response = _post(user, [*PHOTOS, *_masks()], token="<masked-gone>")
    assert response.status_code == 202, response.text
    concept_id = uuid.UUID(response.json()["id"])
    with session_scope() as session:
        before = session.scalar(select(func.count()).select_from(Blob))
        mask_blobs = list(
            session.scalars(
                select(ConceptPhoto.mask_blob_id).where(ConceptPhoto.concept_id == concept_id)
            )
        )
    assert user.delete(f"/api/concepts/{concept_id}").status_code == 204
    with session_scope() as session:
        assert all(session.get(Blob, b) is None for b in mask_blobs)
        assert session.scalar(select(func.count()).select_from(Blob)) == before - 8  # 4 + 4


def test_bad_masks_are_refused_clearly_and_cost_no_fit(
    make_user, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(get_settings(), "fits_per_hour", 2)
    user = make_user()
    cases = [
        (_masks()[:3], 422, "one mask per photo, or none: 4 photos, 3 masks"),
        (_masks(p0=mask_png(8, size=(64, 32))), 422, "64×32 but its photo p0.png is 64×64"),
        (_masks(p0=mask_png(0)), 422, "all black"),
        (_masks(p0=b"<svg/>"), 415, "not an image"),
        (_three_and("rex.png"), 422, "rex.png: no photo"),
        (_three_and("p1.jpg"), 422, "a second mask for p1.png"),
    ]
    for masks, code, message in cases:
        response = _post(user, [*PHOTOS, *masks], token="<refused>")
        assert response.status_code == code, (message, response.text)
        assert message in response.json()["detail"].lower(), response.text
    same_names = [("images", ("photo.png", photo_png(i), "image/png")) for i in range(4)]
    response = _post(user, [*same_names, *_masks()], token="<refused>")
    assert response.status_code == 422 and "different names" in response.json()["detail"]
    with session_scope() as session:  # nothing of the refused uploads was kept
        assert session.scalar(select(Concept).where(Concept.token == "<refused>")) is None
    for k in range(2):  # the hour's two fits are still there
        assert _post(user, [*PHOTOS, *_masks()], token=f"<masked-{k}>").status_code == 202
    over = _post(user, [*PHOTOS, *_masks()], token="<masked-3>")
    assert over.status_code == 429
