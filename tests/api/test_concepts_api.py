"""Concepts over HTTP on PostgreSQL: create, list, read, change, share, files, delete."""

from __future__ import annotations

import html
import io
import uuid

from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from app.concepts.models import CONCEPT_CONTENT_TYPE, Concept, ConceptPhoto
from app.db import session_scope
from app.jobs.models import Job, JobKind, JobState
from app.storage.models import Blob
from tests.support.apihelpers import create_concept, mark_ready
from tests.support.webdata import concept_file, photo_png


def test_create_concept_stores_photos_and_queues_the_fit_job(make_user, anon) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    created = create_concept(user, name="Rex the toy", token="<rex>", steps="12", seed="7")
    assert created["job"]["state"] == "queued" and created["job"]["queue_position"] >= 1
    with session_scope() as session:
        concept = session.get(Concept, uuid.UUID(created["id"]))
        assert concept is not None and concept.status == "fitting"
        assert concept.visibility == "private" and concept.superclass == "toy"
        assert len(concept.photos) == 4
        blob = session.get(Blob, concept.photos[0].blob_id)
        assert blob is not None and blob.content_type == "image/png"
        assert Image.open(io.BytesIO(blob.data)).size == (64, 64)
        job = session.get(Job, uuid.UUID(created["job"]["id"]))
        assert job is not None and job.kind == JobKind.fit and job.state == JobState.queued
        assert job.owner_id == concept.owner_id and job.concept_id == concept.id
        sample_policy = {
            "count": 2, "steps": 25, "guidance": 7.5, "strength": 0.5,
            "prompt": "a photo of a {token}",
        }  # fmt: skip
        assert job.params == {
            "token": "<rex>", "superclass": "toy", "steps": 12, "seed": 7,
            "samples": sample_policy,
        }  # fmt: skip

    body = user.get(f"/api/concepts/{created['id']}").json()
    assert body["status"] == "fitting" and body["job"]["id"] == created["job"]["id"]
    photo = user.get(body["photos"][0]["url"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"
    assert anon.post("/api/concepts", data={"name": "x"}).status_code == 401


def test_create_concept_refuses_bad_input_with_clear_messages(make_user) -> None:  # type: ignore[no-untyped-def]
    user = make_user()

    def post(photos: list[tuple[str, bytes]], **fields: str):  # type: ignore[no-untyped-def]
        data = {"name": "Mug", "token": "<mug>", "superclass": "mug", **fields}
        files = [("images", (n, b, "application/octet-stream")) for n, b in photos]
        return user.post("/api/concepts", data=data, files=files)

    good = [(f"{i}.png", photo_png(i)) for i in range(4)]
    two = post(good[:2])
    assert two.status_code == 422 and "3 to 10 photos" in two.json()["detail"]
    eleven = post([(f"{i}.png", photo_png(i)) for i in range(11)])
    assert eleven.status_code == 422 and "at most 10" in eleven.json()["detail"]
    text = post([*good[:3], ("notes.txt", b"hello, not an image")])
    assert text.status_code == 415 and "notes.txt" in text.json()["detail"]
    bad_token = post(good, token="rex")
    assert bad_token.status_code == 422 and "<name>" in bad_token.json()["detail"]
    bad_class = post(good, superclass="42!")
    assert bad_class.status_code == 422 and "superclass" in bad_class.json()["detail"]
    assert post(good, steps="0").status_code == 422
    assert post(good, seed="-1").status_code == 422

    create_concept(user, token="<taken>")
    taken = post(good, token="<taken>")
    assert taken.status_code == 409 and "already used" in taken.json()["detail"]
    check = user.get("/api/concepts/check-token", params={"token": "<taken>"}).json()
    assert check == {
        "token": "<taken>", "valid": True, "available": False,
        "message": "<taken> is already used by another concept.",
    }  # fmt: skip
    suggested = user.get("/api/concepts/check-token", params={"name": "Rex's Mug!"}).json()
    assert suggested["token"] == "<rex-s-mug>" and suggested["available"]
    assert "toy" in user.get("/api/concepts/superclasses").json()
    with session_scope() as session:  # nothing of the refused uploads was kept
        assert session.scalar(select(func.count()).select_from(Concept)) >= 1
        assert session.scalar(select(Concept).where(Concept.token == "<mug>")) is None


def test_lists_search_and_pagination(make_user, anon) -> None:  # type: ignore[no-untyped-def]
    alice, bob = make_user(), make_user()
    mine = [create_concept(alice, name=f"Teapot {i}", superclass="teapot") for i in range(3)]
    other = create_concept(bob, name="Bob's dog", superclass="dog")
    public_id = mine[0]["id"]
    assert (
        alice.patch(f"/api/concepts/{public_id}", json={"visibility": "public"}).status_code == 200
    )

    page = alice.get("/api/concepts", params={"per_page": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    page2 = alice.get("/api/concepts", params={"per_page": 2, "page": 2}).json()
    ids = {c["id"] for c in page["items"] + page2["items"]}
    assert ids == {c["id"] for c in mine}
    assert other["id"] not in ids
    assert page2["total"] == 3 and len(page2["items"]) == 1
    beyond = alice.get("/api/concepts", params={"per_page": 2, "page": 9}).json()
    assert beyond["total"] == 3 and beyond["items"] == []  # no row carries the window count
    assert alice.get("/api/concepts", params={"q": "TEAPOT 1"}).json()["total"] == 1
    assert alice.get("/api/concepts", params={"q": "dog"}).json()["total"] == 0
    assert anon.get("/api/concepts").status_code == 401

    public = anon.get("/api/concepts/public", params={"q": "teapot"}).json()
    assert [c["id"] for c in public["items"]] == [public_id]
    card = public["items"][0]
    assert card["owner"] == alice.username and card["photos"] == [] and card["job"] is None
    assert alice.get("/api/concepts", params={"per_page": 0}).status_code == 422


def test_only_the_owner_sees_private_concepts_and_changes_any(make_user, anon) -> None:  # type: ignore[no-untyped-def]
    alice, bob = make_user(), make_user()
    concept = create_concept(alice)
    url = f"/api/concepts/{concept['id']}"
    for client in (bob, anon):
        assert client.get(url).status_code == 404
        assert client.get(f"/concepts/{concept['id']}").status_code == 404
    assert bob.get(f"/api/concepts/{uuid.uuid4()}").json() == {"detail": "Concept not found."}
    assert bob.get(url).json() == {"detail": "Concept not found."}  # same answer: no probing
    assert bob.patch(url, json={"name": "mine now"}).status_code == 404
    assert bob.delete(url).status_code == 404
    assert bob.post(f"{url}/share").status_code == 404

    renamed = alice.patch(url, json={"name": "Rex II", "visibility": "public"})
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Rex II" and renamed.json()["visibility"] == "public"
    assert alice.patch(url, json={"visibility": "secret"}).status_code == 422
    seen = bob.get(url).json()
    assert seen["name"] == "Rex II" and not seen["is_owner"] and seen["photos"] == []
    photo = alice.get(url).json()["photos"][0]["url"]
    assert bob.get(photo).status_code == 404  # training photos stay the owner's
    assert anon.get(f"/concepts/{concept['id']}").status_code == 200
    assert bob.patch(url, json={"visibility": "private"}).status_code == 404


def test_share_link_grants_access_until_revoked(make_user, anon) -> None:  # type: ignore[no-untyped-def]
    alice, bob = make_user(), make_user()
    concept = create_concept(alice)
    mark_ready(concept["id"], samples=2)
    url = f"/api/concepts/{concept['id']}"
    shared = alice.post(f"{url}/share")
    assert shared.status_code == 200
    link = shared.json()["url"]
    assert link.startswith("http://127.0.0.1:8000/s/") and len(link.rsplit("/", 1)[1]) >= 43
    assert alice.get(url).json()["visibility"] == "unlisted"
    assert bob.get(url).status_code == 404  # unlisted is not public

    path = link.removeprefix("http://127.0.0.1:8000")
    for visitor in (bob, anon):
        opened = visitor.get(path, follow_redirects=False)
        assert (
            opened.status_code == 303 and opened.headers["location"] == f"/concepts/{concept['id']}"
        )
        page = visitor.get(path)
        assert page.status_code == 200 and html.escape(concept["token"]) in page.text
        body = visitor.get(url).json()
        assert body["status"] == "ready" and len(body["samples"]) == 2
        assert visitor.get(body["samples"][0]["url"]).status_code == 200
        assert visitor.get(f"{url}/file").status_code == 200
    assert bob.get(f"/api/concepts/resolve?prompt=a {concept['token']}").json()["recognized"]
    assert not anon.get(f"/api/concepts/resolve?prompt=a {concept['token']}").json()["recognized"]

    assert alice.delete(f"{url}/share").status_code == 204
    for visitor in (bob, anon):
        assert visitor.get(url).status_code == 404
        assert visitor.get(path).status_code == 404
        assert "revoked" in visitor.get(path).text
    assert alice.get(url).json()["share_link_active"] is False

    again = alice.post(f"{url}/share").json()["url"]
    assert again != link
    assert alice.patch(url, json={"visibility": "private"}).status_code == 200
    assert bob.get(again.removeprefix("http://127.0.0.1:8000")).status_code == 404


def test_download_and_import_concept_files(make_user, anon) -> None:  # type: ignore[no-untyped-def]
    alice, bob = make_user(), make_user()
    concept = create_concept(alice)
    url = f"/api/concepts/{concept['id']}"
    assert alice.get(f"{url}/file").status_code == 404  # not fitted yet
    data = concept_file(concept["token"], fingerprint="a" * 64)
    mark_ready(concept["id"], data)
    download = alice.get(f"{url}/file")
    assert download.status_code == 200 and download.content == data
    assert "attachment" in download.headers["content-disposition"]
    assert download.headers["content-disposition"].endswith('.safetensors"')
    assert bob.get(f"{url}/file").status_code == 404

    def upload(client: TestClient, payload: bytes, name: str = "c.safetensors"):  # type: ignore[no-untyped-def]
        return client.post("/api/concepts/import", files={"file": (name, payload)})

    same_base = concept_file("<imported-ok>", fingerprint="a" * 64)
    imported = upload(bob, same_base)
    assert imported.status_code == 201, imported.text
    body = imported.json()
    assert body["token"] == "<imported-ok>" and body["status"] == "ready" and body["is_owner"]
    assert bob.get(f"/api/concepts/{body['id']}/file").content == same_base
    with session_scope() as session:  # stored like a fitted concept's file, not as opaque bytes
        stored = session.get(Concept, uuid.UUID(body["id"]))
        assert stored is not None and stored.file_blob_id is not None
        blob = session.get(Blob, stored.file_blob_id)
        assert blob is not None and blob.content_type == CONCEPT_CONTENT_TYPE

    other_base = upload(bob, concept_file("<foreign>", fingerprint="b" * 64))
    assert other_base.status_code == 422 and "another base model" in other_base.json()["detail"]
    taken = upload(bob, concept_file(concept["token"], fingerprint="a" * 64))
    assert taken.status_code == 409
    not_concept = upload(bob, concept_file("<x>", fmt="something-else"))
    assert (
        not_concept.status_code == 422 and "not a Perfusion concept" in not_concept.json()["detail"]
    )
    assert upload(bob, b"\x80\x04pickle").status_code == 415  # a pickle, refused unread
    truncated = upload(bob, concept_file("<cut>", fingerprint="a" * 64)[:-16])
    assert truncated.status_code == 422 and "outside the file" in truncated.json()["detail"]
    assert upload(anon, same_base).status_code == 401


def test_delete_removes_photos_images_file_and_jobs(make_user) -> None:  # type: ignore[no-untyped-def]
    alice = make_user()
    concept = create_concept(alice)
    mark_ready(concept["id"], samples=2)
    cid = uuid.UUID(concept["id"])
    with session_scope() as session:
        before = session.scalar(select(func.count()).select_from(Blob))
        photo_blobs = list(
            session.scalars(select(ConceptPhoto.blob_id).where(ConceptPhoto.concept_id == cid))
        )
    assert alice.delete(f"/api/concepts/{cid}").status_code == 204
    assert alice.get(f"/api/concepts/{cid}").status_code == 404
    with session_scope() as session:
        assert session.get(Concept, cid) is None
        assert (
            session.scalar(select(func.count()).select_from(Job).where(Job.concept_id == cid)) == 0
        )
        assert all(session.get(Blob, b) is None for b in photo_blobs)
        # 4 photos + 1 file + 2 sample images
        assert session.scalar(select(func.count()).select_from(Blob)) == before - 7
