"""Importing a concept file under a token the importer chooses, and drawing its samples.

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
from app.concepts.models import Concept
from app.config import Settings
from app.generations.models import Generation
from app.jobs.params import GenerateParams, SamplePolicy
from app.jobs.queue import create_job

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
