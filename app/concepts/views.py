"""Read models of concepts: one concept as the API shows it, and searched, paged lists."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.concepts.access import Need, Viewer, concept_filter
from app.concepts.models import Concept, ConceptPhoto, ShareLink, Visibility
from app.concepts.schemas import ConceptOut, ConceptPage, ImageRef, PhotoRef
from app.generations.models import GeneratedImage, Generation
from app.jobs.models import Job, JobKind
from app.jobs.queue import job_ref
from app.storage import DatabaseBlobStore
from app.users.models import User


def latest_fit_job(session: Session, concept: Concept) -> Job | None:
    return session.scalar(
        select(Job)
        .where(Job.concept_id == concept.id, Job.kind == JobKind.fit)
        .order_by(Job.created_at.desc())
        .limit(1)
    )


def concept_architecture(concept: Concept) -> str | None:
    """`sd` or `sdxl` as recorded with the concept file; None while the first fit runs.

    Files stored before SDXL support carry no architecture: they are SD 1.x/2.x.
    """
    recorded = (concept.settings or {}).get("architecture")
    if recorded:
        return str(recorded)
    return "sd" if concept.file_blob_id is not None else None


def concept_out(session: Session, viewer: Viewer, concept: Concept) -> ConceptOut:
    """One concept as the viewer may see it: the same builder as a page of cards."""
    return concept_outs(session, viewer, [concept])[0]


def list_concepts(
    session: Session,
    viewer: Viewer,
    *,
    mine: bool,
    q: str = "",
    page: int = 1,
    per_page: int = 12,
) -> ConceptPage:
    """The viewer's own concepts (mine) or public ones, newest first, searched by name/class."""
    mine_or_public = Concept.owner_id == viewer.user_id
    if not mine:
        mine_or_public = Concept.visibility == Visibility.public
    query = select(Concept).where(mine_or_public, concept_filter(viewer, Need.view))
    if q.strip():
        pattern = f"%{q.strip().lower()}%"
        query = query.where(
            or_(
                func.lower(Concept.name).like(pattern), func.lower(Concept.superclass).like(pattern)
            )
        )
    # The page and the total in one query (a window count); a page past the end has no row
    # to carry the total, so only then is it counted on its own.
    rows = session.execute(
        query.add_columns(func.count().over())
        .order_by(Concept.created_at.desc(), Concept.id)
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).all()
    if rows:
        total = rows[0][1]
    else:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    return ConceptPage(
        items=concept_outs(session, viewer, [row[0] for row in rows]),
        page=page,
        per_page=per_page,
        total=int(total),
    )


def concept_outs(session: Session, viewer: Viewer, concepts: list[Concept]) -> list[ConceptOut]:
    """Concepts as the viewer may see them (a page of cards, or one) in a fixed number of
    queries: owners, latest fit jobs, sample images, photos and share links are each fetched
    once for the whole list. Reading them per concept made a page of 12 cards ~55 queries,
    most of a browse request's time."""
    if not concepts:
        return []
    ids = [c.id for c in concepts]
    owned = {c.id for c in concepts if viewer.user is not None and c.owner_id == viewer.user.id}
    owners = {
        u.id: u.username
        for u in session.scalars(select(User).where(User.id.in_({c.owner_id for c in concepts})))
    }
    # The latest fit job, shown to owners.
    latest: dict[uuid.UUID, Job] = {}
    if owned:
        for job in session.scalars(
            select(Job)
            .where(Job.concept_id.in_(owned), Job.kind == JobKind.fit)
            .order_by(Job.created_at.desc())
        ):
            latest.setdefault(job.concept_id, job)  # type: ignore[arg-type]
    samples: dict[uuid.UUID, list[GeneratedImage]] = defaultdict(list)
    rows = session.execute(
        select(Generation.concept_id, Generation.params, GeneratedImage)
        .join(GeneratedImage, GeneratedImage.generation_id == Generation.id)
        .join(Concept, Concept.id == Generation.concept_id)
        .where(Generation.concept_id.in_(ids), Generation.owner_id == Concept.owner_id)
        .order_by(Generation.created_at, GeneratedImage.index)
    )
    for concept_id, params, image in rows:
        if params.get("sample"):
            samples[concept_id].append(image)
    photos: dict[uuid.UUID, list[ConceptPhoto]] = defaultdict(list)
    shared: set[uuid.UUID] = set()
    if owned:
        for photo in session.scalars(
            select(ConceptPhoto)
            .where(ConceptPhoto.concept_id.in_(owned))
            .order_by(ConceptPhoto.position)
        ):
            photos[photo.concept_id].append(photo)
        shared = set(
            session.scalars(
                select(ShareLink.concept_id).where(
                    ShareLink.concept_id.in_(owned), ShareLink.revoked_at.is_(None)
                )
            )
        )
    out = []
    for concept in concepts:
        is_owner = concept.id in owned
        job = latest.get(concept.id)
        out.append(
            ConceptOut(
                id=concept.id,
                name=concept.name,
                token=concept.token,
                superclass=concept.superclass,
                visibility=concept.visibility,
                status=concept.status.value,
                base_model=concept.base_model,
                architecture=concept_architecture(concept),
                owner=owners.get(concept.owner_id, "?"),
                is_owner=is_owner,
                created_at=concept.created_at,
                settings=concept.settings,
                samples=[ImageRef.of(i) for i in samples[concept.id]],
                photos=[
                    PhotoRef(
                        id=p.id,
                        url=f"/api/concepts/{concept.id}/photos/{p.id}",
                        width=p.width,
                        height=p.height,
                    )
                    for p in photos[concept.id]
                ],
                file_url=f"/api/concepts/{concept.id}/file" if concept.file_blob_id else None,
                page_url=f"/concepts/{concept.id}",
                job=job_ref(session, job) if job is not None and is_owner else None,
                share_link_active=concept.id in shared,
            )
        )
    return out


def concept_file(session: Session, concept: Concept) -> bytes | None:
    if concept.file_blob_id is None:
        return None
    blob = DatabaseBlobStore(session).get(concept.file_blob_id)
    return blob.data if blob else None


def photo_bytes(session: Session, concept: Concept, photo_id: uuid.UUID) -> bytes | None:
    photo = session.get(ConceptPhoto, photo_id)
    if photo is None or photo.concept_id != concept.id:
        return None
    blob = DatabaseBlobStore(session).get(photo.blob_id)
    return blob.data if blob else None
