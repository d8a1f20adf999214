"""Generation and image API: thin routes over app.generations.service."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.auth.deps import CurrentUser
from app.concepts.access import Need, ViewerDep, get_concept, get_generation, get_image
from app.concepts.models import Concept
from app.deps import SessionDep
from app.generations import service
from app.generations.schemas import (
    GenerationCreated,
    GenerationIn,
    GenerationOut,
    SweepCreated,
    SweepIn,
)
from app.jobs.models import JobKind
from app.jobs.params import random_seed
from app.security.ratelimit import enforce_job_quota
from app.storage import DatabaseBlobStore

router = APIRouter(tags=["generations"])


def _page_concept(session: SessionDep, viewer: ViewerDep, body: GenerationIn) -> Concept | None:
    if body.concept_id is None:
        return None
    return get_concept(session, viewer, body.concept_id, Need.use)


@router.post("/api/generations", status_code=status.HTTP_202_ACCEPTED)
def create_generation(
    body: GenerationIn, user: CurrentUser, viewer: ViewerDep, session: SessionDep
) -> GenerationCreated:
    """Generate 1–4 images; `<tokens>` of concepts you may use are applied."""
    enforce_job_quota(session, user, JobKind.generate)
    page_concept = _page_concept(session, viewer, body)
    return service.create_generation(session, viewer, user, body, page_concept)


@router.post("/api/generations/sweep", status_code=status.HTTP_202_ACCEPTED)
def strength_sweep(
    body: SweepIn, user: CurrentUser, viewer: ViewerDep, session: SessionDep
) -> SweepCreated:
    """One seed, several strengths (default 5): one single-image generation per strength."""
    enforce_job_quota(session, user, JobKind.generate, count=len(body.strengths))
    page_concept = _page_concept(session, viewer, body)
    seed = body.seed if body.seed is not None else random_seed()
    sweep = uuid.uuid4().hex[:12]
    items = [
        service.create_generation(
            session,
            viewer,
            user,
            GenerationIn(**{**body.model_dump(exclude={"strengths"}), "seed": seed, "strength": s}),
            page_concept,
            extra={"sweep": sweep},
        )  # fmt: skip
        for s in body.strengths
    ]
    return SweepCreated(sweep=sweep, items=items)


@router.get("/api/generations")
def list_generations(
    user: CurrentUser, session: SessionDep, concept_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[GenerationOut]:  # fmt: skip
    """Your generations, newest first (optionally those started from one concept's page)."""
    return service.list_generations(session, user, concept_id, limit)


@router.get("/api/generations/{generation_id}")
def read_generation(
    generation_id: uuid.UUID, viewer: ViewerDep, session: SessionDep
) -> GenerationOut:
    """A generation of yours (or a concept's samples) with its images' URLs."""
    return service.generation_out(session, get_generation(session, viewer, generation_id))


@router.get("/api/images/{image_id}", response_class=Response)
def read_image(
    image_id: uuid.UUID, viewer: ViewerDep, session: SessionDep, download: bool = False
) -> Response:
    """The PNG (generation parameters in its text chunks); `download=true` saves it."""
    image = get_image(session, viewer, image_id)
    blob = DatabaseBlobStore(session).get(image.blob_id)
    headers = {"Cache-Control": "private, max-age=86400"}
    if download:
        headers["Content-Disposition"] = (
            f'attachment; filename="perfusion-{image.seed}-{image.index}.png"'
        )
    return Response(blob.data if blob else b"", media_type=image.content_type, headers=headers)
