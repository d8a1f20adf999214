"""Issue #15 over HTTP on PostgreSQL: what a newcomer ran into, each as a check that fails."""

from __future__ import annotations

import html
import uuid

import pytest
from sqlalchemy import select

from app.concepts.filecheck import inspect_concept_file
from app.config import get_settings
from app.db import session_scope
from app.jobs.lifecycle import finish_job
from app.jobs.models import Job, JobKind, JobState
from app.jobs.params import DEFAULT_STRENGTH
from tests.support.apihelpers import create_concept, mark_ready
from tests.support.webdata import concept_file, photo_png


def test_refused_uploads_do_not_use_up_the_fit_quota(
    make_user, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(get_settings(), "fits_per_hour", 3)
    user = make_user()
    good = [("images", (f"{i}.png", photo_png(i), "image/png")) for i in range(3)]
    not_image = [*good[:2], ("images", ("notes.txt", b"not an image", "text/plain"))]
    for files, code in ((not_image, 415), (good[:2], 422), (good * 4, 422)):
        for _ in range(3):  # nine refusals: none of them a fit
            data = {"name": "Rex", "token": "<rex-refused>", "superclass": "toy"}
            assert user.post("/api/concepts", data=data, files=files).status_code == code
    for _ in range(3):
        create_concept(user)  # all three fits of the hour are still there
    over = user.post(
        "/api/concepts", data={"name": "Rex", "token": "<rex-4th>", "superclass": "toy"}, files=good
    )
    assert over.status_code == 429 and "Hourly limit of 3 fit jobs" in over.json()["detail"]
    assert 1 <= int(over.headers["retry-after"]) <= 3600


def test_a_downloaded_concept_imports_back_under_a_free_token(make_user) -> None:  # type: ignore[no-untyped-def]
    alice = make_user()
    concept = create_concept(alice, token="<boomerang>")
    mark_ready(concept["id"], concept_file("<boomerang>", fingerprint="a" * 64))
    data = alice.get(f"/api/concepts/{concept['id']}/file").content

    suggested = alice.get("/api/concepts/free-token", params={"token": "<boomerang>"}).json()
    assert suggested == {
        "token": "<boomerang-2>", "valid": True, "available": True,
        "message": "<boomerang-2> is free.",
    }  # fmt: skip
    same = alice.post("/api/concepts/import", files={"file": ("b.safetensors", data)})
    assert same.status_code == 409 and "<boomerang-2>" in same.json()["detail"]
    taken = alice.post(
        "/api/concepts/import",
        data={"token": "<boomerang>"},
        files={"file": ("b.safetensors", data)},
    )
    assert taken.status_code == 409
    bad = alice.post(
        "/api/concepts/import", data={"token": "boom"}, files={"file": ("b.safetensors", data)}
    )
    assert bad.status_code == 422 and "<name>" in bad.json()["detail"]

    imported = alice.post(
        "/api/concepts/import",
        data={"token": suggested["token"], "name": "Boomerang again"},
        files={"file": ("b.safetensors", data)},
    )
    assert imported.status_code == 201, imported.text
    body = imported.json()
    assert body["token"] == "<boomerang-2>" and body["status"] == "ready"
    assert body["settings"]["training"] == {"steps": 10}
    # The stored file carries the chosen token (what the worker applies), tensors unchanged.
    stored = alice.get(body["file_url"]).content
    assert inspect_concept_file(stored, None).token == "<boomerang-2>"
    assert stored.endswith(data[-64:]) and len(stored) - len(data) < 64
    resolved = alice.get("/api/concepts/resolve", params={"prompt": "a <boomerang-2>"}).json()
    assert [t["token"] for t in resolved["recognized"]] == ["<boomerang-2>"]
    # Its samples are queued for a worker, as after a fit; the page says the training facts.
    with session_scope() as session:
        jobs = session.scalars(
            select(Job).where(Job.concept_id == uuid.UUID(body["id"]), Job.kind == JobKind.generate)
        ).all()
        assert len(jobs) == 1 and jobs[0].params["prompt"] == "a photo of a <boomerang-2>"
        assert jobs[0].params["concept_ids"] == [body["id"]] and jobs[0].params["n"] == 2
        # drawn as a fit's samples are (its SamplePolicy), on seed 0
        drawn = {k: jobs[0].params[k] for k in ("steps", "guidance", "strength", "seed")}
        assert drawn == {
            "steps": get_settings().sample_steps, "guidance": 7.5, "strength": 0.5, "seed": 0
        }  # fmt: skip
    assert alice.get("/api/generations", params={"concept_id": body["id"]}).json() == []
    page = alice.get(body["page_url"]).text
    assert "Trained 10 steps" in page and "Trained ? steps" not in page
    assert "Drawing its samples" in page


def test_a_canceled_or_failed_fit_can_be_fitted_again(make_user) -> None:  # type: ignore[no-untyped-def]
    alice, bob = make_user(), make_user()
    concept = create_concept(alice, steps="33", seed="5")
    url = f"/api/concepts/{concept['id']}"
    assert alice.post(f"{url}/fit").status_code == 409  # still fitting
    assert alice.post(f"/api/jobs/{concept['job']['id']}/cancel").status_code == 200
    page = alice.get(f"/concepts/{concept['id']}").text
    assert 'data-testid="fit-again"' in page and 'id="fit-again-row" hidden' not in page
    assert "same 4 photos, same settings (33 steps)" in page
    assert "This fit was canceled." in page  # and no empty progress bar, dashes and loss box
    assert 'data-testid="fit-live" hidden' in page
    assert bob.post(f"{url}/fit").status_code == 404

    again = alice.post(f"{url}/fit")
    assert again.status_code == 202, again.text
    body = alice.get(url).json()
    assert body["status"] == "fitting" and body["job"]["id"] == again.json()["job"]["id"]
    with session_scope() as session:
        jobs = session.scalars(
            select(Job).where(Job.concept_id == uuid.UUID(concept["id"])).order_by(Job.created_at)
        ).all()
        assert [j.state for j in jobs] == [JobState.canceled, JobState.queued]
        assert jobs[1].params == jobs[0].params and jobs[1].params["steps"] == 33
        finish_job(session, jobs[1], JobState.failed, error="out of memory")  # as a worker ends it
    assert alice.get(url).json()["status"] == "failed"
    assert alice.post(f"{url}/fit").status_code == 202  # a failed fit too
    mark_ready(concept["id"])
    assert alice.post(f"{url}/fit").status_code == 409


def test_browse_never_shows_a_blank_card(make_user) -> None:  # type: ignore[no-untyped-def]
    alice = make_user()
    fitting = create_concept(alice, name="Unfinished")
    imported = create_concept(alice, name="Public no samples")
    mark_ready(imported["id"])
    assert alice.patch(f"/api/concepts/{imported['id']}", json={"visibility": "public"}).is_success
    page = alice.get("/").text
    cards = page.split('data-testid="concept-card"')[1:]
    assert len(cards) >= 3  # both of mine, and the public one again
    for card in cards:
        thumbs = card.split('class="body"')[0]
        assert "<img" in thumbs or 'data-testid="card-placeholder"' in thumbs, thumbs
    mine = next(c for c in cards if html.escape(fitting["token"]) in c)
    assert f"/api/concepts/{fitting['id']}/photos/" in mine  # the owner sees the photos
    visitor = make_user()
    public = visitor.get("/").text.split('data-testid="public-concepts"')[1]
    assert 'data-testid="card-placeholder"' in public and "no samples yet" in public


def test_the_toy_world_says_what_it_draws_and_suggests_only_its_nouns(make_user) -> None:  # type: ignore[no-untyped-def]
    from workers.toyworld.world import SHAPES, SUPERCLASS_NOUNS

    user = make_user()
    assert user.get("/api/concepts/superclasses").json() == [*SUPERCLASS_NOUNS, *SHAPES]
    page = user.get("/concepts/new").text
    assert "one simple object on a plain background, 64×64 px" in page
    assert 'data-toy-world="true"' in page and 'data-superclass="dog"' not in page


def test_the_page_says_trained_only_when_the_fit_is_done(make_user) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    concept = create_concept(user, steps="80")
    page = user.get(f"/concepts/{concept['id']}").text
    assert "Trained" not in page and "Training 80 steps" in page
    mark_ready(concept["id"])
    assert "Trained 80 steps on 4 photos" in user.get(f"/concepts/{concept['id']}").text


def test_the_strength_slider_says_what_moves(make_user) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    concept = create_concept(user, superclass="toy")
    mark_ready(concept["id"])
    page = user.get(f"/concepts/{concept['id']}").text
    token = html.escape(concept["token"])
    assert '<span class="end">the toy</span>' in page
    assert f'<span class="end">unmistakably {token}</span>' in page
    assert "At 0 you get" in page and "just the superclass — a toy as the base model" in page
    assert f"until at 1 it is unmistakably {token}" in page
    # before any script runs, the number beside the slider is the slider's own default
    assert f'<b id="strength-value">{DEFAULT_STRENGTH:.2f}</b>' in page


def test_lists_read_each_card_in_a_fixed_number_of_queries(make_user) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import event

    from app.db import get_engine

    alice, bob = make_user(), make_user()
    made = [create_concept(alice, name=f"Lister {i}", superclass="lister") for i in range(6)]
    for i, concept in enumerate(made):
        if i % 2:
            mark_ready(concept["id"], samples=2)
            alice.patch(f"/api/concepts/{concept['id']}", json={"visibility": "public"})
    alice.post(f"/api/concepts/{made[1]['id']}/share")

    def queries(client, path: str) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
        seen: list[str] = []

        def count(*args: object) -> None:
            seen.append(str(args[2]))

        event.listen(get_engine(), "before_cursor_execute", count)
        try:
            body = client.get(path, params={"q": "lister", "per_page": 60}).json()
        finally:
            event.remove(get_engine(), "before_cursor_execute", count)
        return len(seen), body

    counts = {}
    for client, path in ((alice, "/api/concepts"), (bob, "/api/concepts/public")):
        counts[path], page = queries(client, path)
        # the same cards as reading each concept on its own
        assert page["items"] == [
            client.get(f"/api/concepts/{c['id']}").json() for c in page["items"]
        ]
        assert page["total"] == (6 if client is alice else 3)
    queued = 3  # each of alice's queued fits: its queue position and what is ahead of it
    assert counts["/api/concepts"] <= 12 + 2 * queued, counts
    for concept in made[::2]:  # three more public cards, with samples: no more queries
        mark_ready(concept["id"], samples=2)
        alice.patch(f"/api/concepts/{concept['id']}", json={"visibility": "public"})
    more, page = queries(bob, "/api/concepts/public")
    assert page["total"] == 6 and more == counts["/api/concepts/public"] <= 10, (more, counts)
    _, mine = queries(alice, "/api/concepts")
    assert any(c["share_link_active"] for c in mine["items"])
    assert all(len(c["photos"]) == 4 for c in mine["items"])


def test_the_toy_world_offers_sample_photo_sets(make_user, anon) -> None:  # type: ignore[no-untyped-def]
    """'Try with sample photos': the page names each set and serves its four photos."""
    from app.concepts.examples import EXAMPLES_DIR

    page = make_user().get("/concepts/new").text
    assert 'data-testid="sample-sets"' in page
    assert 'data-token="&lt;candy&gt;"' in page and "a red circle with green stripes" in page
    for k in range(1, 5):
        response = anon.get(f"/examples/candy/photo-{k}.png")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content == (EXAMPLES_DIR / "candy" / f"photo-{k}.png").read_bytes()


def test_the_samples_say_the_strength_they_were_drawn_at(make_user) -> None:  # type: ignore[no-untyped-def]
    """They said "strength 1.0" whatever it was; a fit draws them at the default, 0.5."""
    from app.generations.models import Generation
    from app.jobs.params import DEFAULT_STRENGTH

    user = make_user()
    concept = create_concept(user)
    mark_ready(concept["id"], samples=2)
    page = user.get(f"/concepts/{concept['id']}").text
    assert "strength 1.0" not in page and "· strength" not in page  # not recorded: not said
    with session_scope() as session:
        sample = session.scalars(
            select(Generation).where(Generation.concept_id == uuid.UUID(concept["id"]))
        ).one()
        sample.params = {**sample.params, "strength": DEFAULT_STRENGTH}
    page = user.get(f"/concepts/{concept['id']}").text
    assert f"” · strength {DEFAULT_STRENGTH:.2f}</p>" in page
