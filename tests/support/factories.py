"""Rows for tests, inserted directly through the models (the product routes are separate)."""

from __future__ import annotations

import io
import uuid
from typing import Any

from PIL import Image
from sqlalchemy.orm import Session

from app.auth.sessions import SESSION_COOKIE, make_session_value
from app.concepts.models import Concept, ConceptPhoto, ConceptStatus
from app.config import get_settings
from app.generations.models import Generation
from app.jobs.models import Job, JobKind, JobState
from app.storage import DatabaseBlobStore
from app.users.models import User


def make_user(session: Session, name: str | None = None) -> User:
    user = User(username=name or f"u{uuid.uuid4().hex[:10]}", password_hash="x")
    session.add(user)
    session.flush()
    return user


def session_cookie(user_id: uuid.UUID) -> dict[str, str]:
    return {SESSION_COOKIE: make_session_value(get_settings().secret(), user_id)}


def png(color: tuple[int, int, int], size: int = 16) -> bytes:
    out = io.BytesIO()
    image = Image.new("RGB", (size, size), (20, 20, 20))
    image.paste(color, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    image.save(out, format="PNG")
    return out.getvalue()


def make_concept(
    session: Session,
    owner: User,
    *,
    token: str | None = None,
    superclass: str = "dog",
    photos: int = 2,
    status: ConceptStatus = ConceptStatus.fitting,
) -> Concept:
    concept = Concept(
        owner_id=owner.id,
        name="Rex",
        token=token or f"<c{uuid.uuid4().hex[:6]}>",
        superclass=superclass,
        base_model=get_settings().base_model,
        status=status,
    )
    session.add(concept)
    session.flush()
    blobs = DatabaseBlobStore(session)
    for position in range(photos):
        data = png((200, 40 + 40 * position, 40))
        blob_id = blobs.put(data, "image/png")
        session.add(
            ConceptPhoto(
                concept_id=concept.id, blob_id=blob_id, position=position, width=16, height=16
            )
        )
    session.flush()
    return concept


def make_generation(session: Session, owner: User, prompt: str = "a photo of a dog") -> Generation:
    generation = Generation(owner_id=owner.id, prompt=prompt, negative_prompt="", params={})
    session.add(generation)
    session.flush()
    return generation


def make_job_row(session: Session, kind: JobKind = JobKind.ping, **fields: Any) -> Job:
    """A job row without a broker message (stays as it is unless a test moves it)."""
    fields.setdefault("state", JobState.queued)
    fields.setdefault("max_attempts", 3)
    job = Job(kind=kind, params=fields.pop("params", {}), **fields)
    session.add(job)
    session.flush()
    return job
