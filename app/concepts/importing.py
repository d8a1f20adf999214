"""Importing a concept file: checked against the concepts fitted here, stored under a token
the importer chooses, its samples drawn by a worker.

A downloaded concept carries its token in the file's metadata, so importing it back into the
studio it came from collided with the original. The importer now picks the token (the page
prefills a free one, `<rex-2>`); the stored file is rewritten to carry it, so the worker, a
later download and the prompt all agree. Only the JSON header changes: tensor offsets are
relative to the data section, which is copied byte for byte.
"""

from __future__ import annotations

import json
import struct

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.concepts import filecheck
from app.concepts.models import (
    CONCEPT_CONTENT_TYPE,
    NAME_MAX_CHARS,
    SUPERCLASS_MAX_CHARS,
    Concept,
    ConceptStatus,
    Visibility,
)
from app.concepts.rules import TOKEN_RE, check_token
from app.concepts.service import ConceptError
from app.config import Settings
from app.generations.models import Generation
from app.jobs.params import GenerateParams, SamplePolicy
from app.jobs.queue import create_job
from app.storage import DatabaseBlobStore
from app.users.models import User

TOKEN_MAX_NAME = 37  # TOKEN_RE: <, then 1 + 36 characters, then >


def _taken(session: Session, token: str) -> bool:
    return session.scalar(select(Concept.id).where(Concept.token == token)) is not None


def free_token(session: Session, token: str) -> str:
    """`token` if no concept uses it, else the first free `<name-2>`, `<name-3>`, …"""
    if not _taken(session, token):
        return token
    name = token.strip("<>")
    for n in range(2, 1000):
        suffix = f"-{n}"
        candidate = f"<{name[: TOKEN_MAX_NAME - len(suffix)].rstrip('-_')}{suffix}>"
        if not _taken(session, candidate):
            return candidate
    raise LookupError(f"no free variant of {token}")


def retoken(data: bytes, token: str) -> bytes:
    """The same concept file with `token` in its metadata (tensor bytes unchanged)."""
    header, start = filecheck._parse_header(data)
    meta = dict(header.get("__metadata__") or {})
    meta["token"] = token
    header["__metadata__"] = meta
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw + data[start:]


def queue_samples(session: Session, settings: Settings, concept: Concept) -> Generation:
    """A generation of the concept's samples, drawn by a worker under the sample policy a fit
    gets (`SamplePolicy`), on seed 0."""
    policy = SamplePolicy(steps=settings.sample_steps)
    prompt = policy.prompt_for(concept.token)
    params = GenerateParams(
        prompt=prompt,
        negative_prompt="",
        n=policy.count,
        seed=0,
        steps=policy.steps,
        guidance=policy.guidance,
        strength=policy.strength,
        concept_ids=[concept.id],
    )
    generation = Generation(
        owner_id=concept.owner_id,
        concept_id=concept.id,
        prompt=prompt,
        negative_prompt="",
        params={"sample": True, "tokens": [concept.token], **params.model_dump(mode="json")},
    )
    session.add(generation)
    session.flush()
    create_job(
        session,
        params,
        owner_id=concept.owner_id,
        generation_id=generation.id,
        concept_id=concept.id,
    )
    return generation


def import_concept(
    session: Session,
    settings: Settings,
    user: User,
    data: bytes,
    name: str | None,
    visibility: Visibility,
    token: str | None = None,
) -> Concept:
    """A ready concept from an uploaded concept file, checked against the newest concept
    fitted here: the same tensor layout and the same base-model fingerprint; under `token`
    when the importer chose one (the stored file is rewritten to carry it)."""
    reference = filecheck.reference_file(session, settings.base_model)
    try:
        info = filecheck.inspect_concept_file(
            data, reference.schema if reference else None, settings
        )
    except filecheck.ConceptFileRejected as exc:
        raise ConceptError(exc.status_code, str(exc)) from None
    if token is not None and token != info.token:
        check = check_token(session, token)
        if not check.valid:
            raise ConceptError(422, check.message)
        data = retoken(data, token)
    token = token or info.token
    if not TOKEN_RE.match(token):
        raise ConceptError(422, f"The concept's token {token!r} is not of the form <name>.")
    expected = reference.base_fingerprint if reference else ""
    if expected and info.base_fingerprint != expected:
        raise ConceptError(
            422,
            "This concept was made for another base model "
            f"({info.base_model_id or 'unknown'}); this studio runs {settings.base_model}.",
        )
    check = check_token(session, token)
    if not check.available:
        raise ConceptError(
            409,
            f"{token} is already used by another concept here; import it under another "
            f"token, e.g. {free_token(session, token)}.",
        )
    blob_id = DatabaseBlobStore(session).put(data, CONCEPT_CONTENT_TYPE)
    concept = Concept(
        owner_id=user.id,
        name=(name or "").strip()[:NAME_MAX_CHARS] or token.strip("<>"),
        token=token,
        superclass=info.superclass[:SUPERCLASS_MAX_CHARS],
        visibility=visibility,
        base_model=settings.base_model,
        status=ConceptStatus.ready,
        settings={
            "imported": True,
            "architecture": info.architecture,
            "training": filecheck.training_settings(info),
        },
        file_blob_id=blob_id,
    )
    session.add(concept)
    session.flush()
    queue_samples(session, settings, concept)
    return concept
