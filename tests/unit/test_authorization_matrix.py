"""Every object route × every kind of caller, against the expected outcome.

Callers: the owner, another signed-in user, an anonymous visitor, a signed-in holder of the
concept's share link, an anonymous holder (share cookie), and both holders after the owner
revoked the link. Each case runs on a fresh world so mutations cannot leak between cases.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.concepts import sharing
from app.concepts.models import Concept, ConceptStatus, Visibility
from app.config import get_settings
from app.db import session_scope
from app.generations.models import GeneratedImage, Generation
from app.jobs.models import JobKind
from app.storage import DatabaseBlobStore
from tests.support.factories import make_concept, make_job_row, make_user, png, session_cookie

ACTORS = ("owner", "other", "anonymous", "holder", "anon_holder", "revoked", "revoked_anon")
VIEWERS = {"owner", "holder", "anon_holder"}


@dataclass
class World:
    ids: dict[str, uuid.UUID]
    share_secret: str


def build_world() -> World:
    """A ready unlisted concept with a photo, file, sample image, fit job and share link; and
    a private generation of the owner with its image and job."""
    with session_scope() as session:
        owner, other, holder = (make_user(session) for _ in range(3))
        concept = make_concept(session, owner, photos=1, status=ConceptStatus.ready)
        blobs = DatabaseBlobStore(session)
        concept.file_blob_id = blobs.put(b"concept-bytes", "application/octet-stream")
        concept.visibility = Visibility.unlisted
        fit = make_job_row(session, JobKind.fit, owner_id=owner.id, concept_id=concept.id)
        sample = Generation(owner_id=owner.id, concept_id=concept.id, prompt="a <x>",
                            params={"sample": True})  # fmt: skip
        private = Generation(owner_id=owner.id, prompt="secret", params={})
        session.add_all([sample, private])
        session.flush()
        images = {}
        for name, gen in (("sample_image", sample), ("private_image", private)):
            image = GeneratedImage(generation_id=gen.id, index=0, seed=1, width=16, height=16,
                                   blob_id=blobs.put(png((1, 2, 3)), "image/png"))  # fmt: skip
            session.add(image)
            session.flush()
            images[name] = image.id
        gen_job = make_job_row(session, JobKind.generate, owner_id=owner.id,
                               generation_id=private.id)  # fmt: skip
        secret = sharing.create_share_link(session, get_settings(), concept).rsplit("/", 1)[1]
        return World(
            ids={"owner": owner.id, "other": other.id, "holder": holder.id,
                 "concept": concept.id, "photo": concept.photos[0].id, "fit_job": fit.id,
                 "sample": sample.id, "private": private.id, "gen_job": gen_job.id,
                 **images},
            share_secret=secret,
        )  # fmt: skip


def act_as(client: TestClient, world: World, actor: str) -> None:
    """Set the client's cookies to those `actor` would hold (opening the link if they did)."""
    client.cookies.clear()
    user = {"owner": "owner", "other": "other", "holder": "holder", "revoked": "holder"}.get(actor)
    if user is not None:
        client.cookies.update(session_cookie(world.ids[user]))
    if actor in ("holder", "anon_holder", "revoked", "revoked_anon"):
        opened = client.get(f"/s/{world.share_secret}", follow_redirects=False)
        assert opened.status_code == 303, opened.text
    if actor.startswith("revoked"):
        with session_scope() as session:
            concept = session.get(Concept, world.ids["concept"])
            assert concept is not None
            sharing.revoke_share_links(session, concept)


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    body: dict[str, Any] | None
    allowed: frozenset[str]
    ok: int
    anonymous: int = 404
    """What callers without an account get when refused (401 where sign-in is required)."""


def route(name: str, method: str, path: str, allowed: set[str], ok: int = 200,
          body: dict[str, Any] | None = None, anonymous: int = 404) -> Route:  # fmt: skip
    return Route(name, method, path, body, frozenset(allowed), ok, anonymous)


ROUTES = [
    route("read concept", "GET", "/api/concepts/{concept}", VIEWERS),
    route("concept page", "GET", "/concepts/{concept}", VIEWERS),
    route("download file", "GET", "/api/concepts/{concept}/file", VIEWERS),
    route("training photo", "GET", "/api/concepts/{concept}/photos/{photo}", {"owner"}),
    route("rename", "PATCH", "/api/concepts/{concept}", {"owner"}, body={"name": "New"}),
    route(
        "make public", "PATCH", "/api/concepts/{concept}", {"owner"}, body={"visibility": "public"}
    ),  # fmt: skip
    route("delete", "DELETE", "/api/concepts/{concept}", {"owner"}, ok=204),
    route("new share link", "POST", "/api/concepts/{concept}/share", {"owner"}),
    route("revoke share", "DELETE", "/api/concepts/{concept}/share", {"owner"}, ok=204),
    route(
        "generate with it",
        "POST",
        "/api/generations",
        {"owner", "holder"},
        ok=202,
        body={"prompt": "a dog", "n": 1, "steps": 1, "concept_id": "{concept}"},
        anonymous=401,
    ),  # fmt: skip
    route("sample generation", "GET", "/api/generations/{sample}", VIEWERS),
    route("sample image", "GET", "/api/images/{sample_image}", VIEWERS),
    route("private generation", "GET", "/api/generations/{private}", {"owner"}),
    route("private image", "GET", "/api/images/{private_image}", {"owner"}),
    route("fit job", "GET", "/api/jobs/{fit_job}", {"owner"}),
    route("cancel fit", "POST", "/api/jobs/{fit_job}/cancel", {"owner"}),
    route("generation job", "GET", "/api/jobs/{gen_job}", {"owner"}),
]
CASES = [(r, a) for r in ROUTES for a in ACTORS]


def expected(r: Route, actor: str) -> int:
    if actor in r.allowed:
        return r.ok
    return r.anonymous if actor in ("anonymous", "anon_holder", "revoked_anon") else 404


def fill(template: Any, ids: dict[str, uuid.UUID]) -> Any:
    if isinstance(template, str):
        return template.format(**{k: str(v) for k, v in ids.items()})
    if isinstance(template, dict):
        return {k: fill(v, ids) for k, v in template.items()}
    return template


def test_authorization_matrix(client: TestClient, capsys: pytest.CaptureFixture[str]) -> None:
    failures = []
    for r, actor in CASES:
        world = build_world()
        act_as(client, world, actor)
        response = client.request(r.method, fill(r.path, world.ids), json=fill(r.body, world.ids))
        if response.status_code != expected(r, actor):
            failures.append(f"{r.name} as {actor}: {response.status_code} "
                            f"(expected {expected(r, actor)}) {response.text[:120]}")  # fmt: skip
    with capsys.disabled():
        print(f"\nauthorization matrix: {len(ROUTES)} routes × {len(ACTORS)} callers = "
              f"{len(CASES)} cases, {len(CASES) - len(failures)} as expected")  # fmt: skip
    assert not failures, "\n".join(failures)
