"""Generations and images over HTTP on PostgreSQL: validation, concept tokens, job contract."""

from __future__ import annotations

import uuid

from app.db import session_scope
from app.generations.models import Generation
from app.jobs.models import Job, JobKind, JobState
from tests.support.apihelpers import add_image, create_concept, mark_ready


def test_generate_resolves_usable_tokens_and_queues_the_job(make_user, anon) -> None:  # type: ignore[no-untyped-def]
    alice, bob = make_user(), make_user()
    own = create_concept(alice, token="<own-rex>")
    public = create_concept(bob, token="<bobs-public>")
    private = create_concept(bob, token="<bobs-private>")
    fitting = create_concept(alice, token="<still-fitting>")
    for c in (own, public, private):
        mark_ready(c["id"])
    bob.patch(f"/api/concepts/{public['id']}", json={"visibility": "public"})

    prompt = "a <own-rex> next to a <bobs-public> and a <bobs-private> and <still-fitting>"
    resolve = alice.get("/api/concepts/resolve", params={"prompt": prompt}).json()
    assert [r["token"] for r in resolve["recognized"]] == ["<own-rex>", "<bobs-public>"]
    assert resolve["unknown"] == ["<bobs-private>", "<still-fitting>"]
    assert fitting  # a concept still fitting cannot be used yet

    body = {
        "prompt": prompt, "negative_prompt": "blurry", "n": 3, "seed": 42,
        "steps": 10, "guidance": 5.0, "strength": 0.8, "concept_id": own["id"],
    }  # fmt: skip
    response = alice.post("/api/generations", json=body)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["job"]["state"] == "queued" and created["seed"] == 42
    assert created["unknown"] == ["<bobs-private>", "<still-fitting>"]
    with session_scope() as session:
        job = session.get(Job, uuid.UUID(created["job"]["id"]))
        assert job is not None and job.kind == JobKind.generate and job.state == JobState.queued
        assert str(job.generation_id) == created["id"] and str(job.concept_id) == own["id"]
        assert job.params == {
            "prompt": prompt, "negative_prompt": "blurry", "n": 3, "seed": 42, "steps": 10,
            "guidance": 5.0, "strength": 0.8, "concept_ids": [own["id"], public["id"]],
        }  # fmt: skip
        generation = session.get(Generation, uuid.UUID(created["id"]))
        assert generation is not None and generation.owner_id == job.owner_id

    random_seed = alice.post("/api/generations", json={"prompt": "a <own-rex>"}).json()
    assert 0 <= random_seed["seed"] < 2**32
    assert anon.post("/api/generations", json={"prompt": "a cat"}).status_code == 401
    # generating from a page of a concept you may not use is refused like a missing one
    refused = alice.post("/api/generations", json={"prompt": "x", "concept_id": private["id"]})
    assert refused.status_code == 404


def test_generation_input_is_validated_with_clear_messages(make_user) -> None:  # type: ignore[no-untyped-def]
    alice = make_user()
    cases = {
        "prompt": {"prompt": ""},
        "n": {"prompt": "a cat", "n": 5},
        "seed": {"prompt": "a cat", "seed": 2**32},
        "steps": {"prompt": "a cat", "steps": 0},
        "guidance": {"prompt": "a cat", "guidance": 31},
        "strength": {"prompt": "a cat", "strength": 1.5},
    }
    for field, body in cases.items():
        response = alice.post("/api/generations", json=body)
        assert response.status_code == 422, field
        assert response.json()["detail"][0]["loc"][-1] == field
    long = alice.post("/api/generations", json={"prompt": "x" * 501})
    assert long.status_code == 422 and "500" in long.json()["detail"][0]["msg"]


def test_history_images_and_sweeps_belong_to_their_owner(make_user, anon) -> None:  # type: ignore[no-untyped-def]
    alice, bob = make_user(), make_user()
    concept = create_concept(alice)
    mark_ready(concept["id"], samples=1)
    alice.patch(f"/api/concepts/{concept['id']}", json={"visibility": "public"})
    token = concept["token"]
    mine = alice.post(
        "/api/generations", json={"prompt": f"a {token}", "n": 1, "concept_id": concept["id"]}
    ).json()
    image_id = add_image(mine["id"])

    got = alice.get(f"/api/generations/{mine['id']}").json()
    assert got["images"][0]["url"] == f"/api/images/{image_id}"
    assert got["job"]["state"] == "queued" and got["params"]["tokens"] == [token]
    image = alice.get(f"/api/images/{image_id}")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    download = alice.get(f"/api/images/{image_id}", params={"download": "true"})
    assert download.headers["content-disposition"].startswith("attachment;")
    for other in (bob, anon):  # a public concept's samples are public; your images are not
        assert other.get(f"/api/generations/{mine['id']}").status_code == 404
        assert other.get(f"/api/images/{image_id}").status_code == 404
        sample_url = other.get(f"/api/concepts/{concept['id']}").json()["samples"][0]["url"]
        assert other.get(sample_url).status_code == 200

    bob_gen = bob.post(
        "/api/generations", json={"prompt": f"a {token}", "concept_id": concept["id"]}
    ).json()
    assert bob_gen["recognized"][0]["token"] == token
    history = alice.get("/api/generations", params={"concept_id": concept["id"]}).json()
    assert [g["id"] for g in history] == [mine["id"]]  # samples and bob's runs are not listed
    assert [g["id"] for g in bob.get("/api/generations").json()] == [bob_gen["id"]]

    sweep = alice.post(
        "/api/generations/sweep",
        json={"prompt": f"a {token}", "seed": 9, "concept_id": concept["id"]},
    )
    assert sweep.status_code == 202, sweep.text
    items = sweep.json()["items"]
    assert len(items) == 5 and {i["seed"] for i in items} == {9}
    with session_scope() as session:
        strengths = [
            session.get(Job, uuid.UUID(i["job"]["id"])).params["strength"]  # type: ignore[union-attr]
            for i in items
        ]
    assert strengths == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert alice.post("/api/generations/sweep", json={"prompt": "x", "n": 2}).status_code == 422
