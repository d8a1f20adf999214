"""Generations: resolve concept tokens in a prompt, queue generate jobs, read results."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.concepts.access import Need, Viewer, concept_filter
from app.concepts.models import Concept, ConceptStatus
from app.concepts.rules import TOKEN_PATTERN
from app.concepts.schemas import ImageRef, ResolvedToken
from app.generations.models import Generation
from app.generations.schemas import GenerationCreated, GenerationIn, GenerationOut
from app.jobs.models import Job
from app.jobs.params import GenerateParams, random_seed
from app.jobs.queue import create_job, job_ref
from app.users.models import User
from app.webhooks.service import callback_for

PROMPT_TOKEN_RE = re.compile(TOKEN_PATTERN)


def resolve_tokens(
    session: Session, viewer: Viewer, prompt: str
) -> tuple[list[Concept], list[str]]:
    """Concepts whose tokens appear in the prompt and that the viewer may use; and the rest."""
    tokens = list(dict.fromkeys(PROMPT_TOKEN_RE.findall(prompt)))
    if not tokens:
        return [], []
    found = {
        c.token: c
        for c in session.scalars(
            select(Concept).where(
                Concept.token.in_(tokens),
                Concept.status == ConceptStatus.ready,
                concept_filter(viewer, Need.use),
            )
        )
    }
    return [found[t] for t in tokens if t in found], [t for t in tokens if t not in found]


def resolved(concepts: list[Concept]) -> list[ResolvedToken]:
    return [ResolvedToken(token=c.token, concept_id=c.id, name=c.name) for c in concepts]


def create_generation(
    session: Session,
    viewer: Viewer,
    user: User,
    body: GenerationIn,
    page_concept: Concept | None,
    extra: dict[str, object] | None = None,
) -> GenerationCreated:
    """A Generation row and its queued generate job (seed chosen here when left random)."""
    concepts, unknown = resolve_tokens(session, viewer, body.prompt)
    params = GenerateParams(
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        n=body.n,
        seed=body.seed if body.seed is not None else random_seed(),
        steps=body.steps,
        guidance=body.guidance,
        strength=body.strength,
        concept_ids=[c.id for c in concepts],
    )
    generation = Generation(
        owner_id=user.id,
        concept_id=page_concept.id if page_concept else None,
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        params={
            **params.model_dump(mode="json"),
            "tokens": [c.token for c in concepts],
            **(extra or {}),
        },
    )
    session.add(generation)
    session.flush()
    job = create_job(
        session,
        params,
        owner_id=user.id,
        generation_id=generation.id,
        concept_id=page_concept.id if page_concept else None,
        callback_url=callback_for(user, body.callback_url),
    )
    return GenerationCreated(
        id=generation.id,
        job=job_ref(session, job),
        seed=params.seed,
        recognized=resolved(concepts),
        unknown=unknown,
    )


def latest_job(session: Session, generation: Generation) -> Job | None:
    return session.scalar(
        select(Job)
        .where(Job.generation_id == generation.id)
        .order_by(Job.created_at.desc())
        .limit(1)
    )


def generation_out(session: Session, generation: Generation) -> GenerationOut:
    job = latest_job(session, generation)
    return GenerationOut(
        id=generation.id,
        concept_id=generation.concept_id,
        prompt=generation.prompt,
        negative_prompt=generation.negative_prompt,
        params=generation.params,
        created_at=generation.created_at,
        images=[ImageRef.of(i) for i in generation.images],
        job=job_ref(session, job) if job is not None else None,
    )


def list_generations(
    session: Session, user: User, concept_id: uuid.UUID | None, limit: int = 50
) -> list[GenerationOut]:
    """The user's own generations (newest first), optionally those of one concept page."""
    query = select(Generation).where(Generation.owner_id == user.id)
    if concept_id is not None:
        query = query.where(Generation.concept_id == concept_id)
    rows = session.scalars(query.order_by(Generation.created_at.desc()).limit(limit))
    return [generation_out(session, g) for g in rows if not g.params.get("sample")]
