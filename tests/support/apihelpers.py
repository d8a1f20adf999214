"""Helpers for API tests: create concepts over HTTP, leave worker results as rows."""

from __future__ import annotations

import itertools

from fastapi.testclient import TestClient

from tests.support.webdata import photo_png

_tokens = itertools.count()


def create_concept(client: TestClient, *, photos: int = 4, **fields: str) -> dict:
    """POST /api/concepts with drawn photos; returns the 202 body."""
    data = {
        "name": "Rex",
        "token": f"<rex-{next(_tokens)}-{id(client) % 1000}>",
        "superclass": "toy",
        "steps": "12",
        "seed": "7",
        **fields,
    }
    files = [("images", (f"p{i}.png", photo_png(i), "image/png")) for i in range(photos)]
    response = client.post("/api/concepts", data=data, files=files)
    assert response.status_code == 202, response.text
    return response.json() | {"token": data["token"]}


def mark_ready(concept_id: str, file_bytes: bytes | None = None, samples: int = 0) -> None:
    """Do what a successful fit leaves behind: status ready, a file, sample images."""
    import uuid

    from app.concepts.models import Concept, ConceptStatus
    from app.db import session_scope
    from app.generations.models import GeneratedImage, Generation
    from app.jobs.models import Job, JobState
    from app.storage import DatabaseBlobStore
    from tests.support.webdata import concept_file

    with session_scope() as session:
        concept = session.get(Concept, uuid.UUID(concept_id))
        assert concept is not None
        store = DatabaseBlobStore(session)
        data = file_bytes or concept_file(concept.token)
        concept.file_blob_id = store.put(data, "application/octet-stream")
        concept.status = ConceptStatus.ready
        for job in session.query(Job).filter(Job.concept_id == concept.id):
            job.state = JobState.succeeded
        if samples:
            gen = Generation(
                owner_id=concept.owner_id,
                concept_id=concept.id,
                prompt=f"a {concept.token}",
                params={"sample": True},
            )
            session.add(gen)
            session.flush()
            for i in range(samples):
                session.add(
                    GeneratedImage(
                        generation_id=gen.id,
                        blob_id=store.put(photo_png(i), "image/png"),
                        index=i,
                        seed=100 + i,
                        width=64,
                        height=64,
                    )
                )


def add_image(generation_id: str) -> str:
    """Store one generated image for a generation (what the worker would do)."""
    import uuid

    from app.db import session_scope
    from app.generations.models import GeneratedImage
    from app.storage import DatabaseBlobStore

    with session_scope() as session:
        image = GeneratedImage(
            generation_id=uuid.UUID(generation_id),
            blob_id=DatabaseBlobStore(session).put(photo_png(9), "image/png"),
            index=0,
            seed=5,
            width=64,
            height=64,
        )
        session.add(image)
        session.flush()
        return str(image.id)
