"""Concepts: create (photos → fit job), list, read, change, share, import, export, delete."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from app.concepts import filecheck
from app.concepts.access import Need, Viewer, can, concept_filter
from app.concepts.models import Concept, ConceptPhoto, ConceptStatus, ShareLink, Visibility
from app.concepts.schemas import ConceptOut, ConceptPage, ImageRef, JobRef, PhotoRef, TokenCheck
from app.config import TOYWORLD_MODEL, Settings
from app.db import utcnow
from app.generations.models import GeneratedImage, Generation
from app.jobs.models import Job, JobKind, JobState
from app.jobs.service import create_job, queue_position
from app.security.tokens import hash_token, new_token
from app.storage import DatabaseBlobStore
from app.storage.models import Blob
from app.uploads.images import UploadRejected, sanitize_image
from app.users.models import User

MIN_PHOTOS, MAX_PHOTOS = 3, 10
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_FIT_STEPS = 5000
TOKEN_RE = re.compile(r"^<[a-z0-9][a-z0-9_-]{0,36}>$")
SUPERCLASS_RE = re.compile(r"^[a-z][a-z -]{0,38}[a-z]$|^[a-z]$")
COMMON_SUPERCLASSES = (
    "person", "man", "woman", "child", "dog", "cat", "bird", "toy", "car", "mug", "bag",
    "shoe", "plant", "building", "sculpture", "teddy bear", "backpack", "object",
)  # fmt: skip


class ConceptError(Exception):
    """A refusal with an HTTP status and a message for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


# -- suggestions and checks --------------------------------------------------------------------


def is_toy_world(settings: Settings) -> bool:
    return settings.base_model.rstrip("/") == str(TOYWORLD_MODEL)


def superclass_suggestions(settings: Settings) -> list[str]:
    """Common superclasses; the toy world's own nouns first when it is the base model."""
    if is_toy_world(settings):
        try:
            from workers.toyworld.world import SHAPES, SUPERCLASS_NOUNS  # PIL only, no torch

            return [*SUPERCLASS_NOUNS, *SHAPES, *COMMON_SUPERCLASSES]
        except ImportError:
            pass
    return list(COMMON_SUPERCLASSES)


def suggest_token(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:36].strip("-")
    return f"<{slug or 'concept'}>"


def check_token(session: Session, token: str) -> TokenCheck:
    if not TOKEN_RE.match(token):
        return TokenCheck(
            token=token,
            valid=False,
            available=False,
            message="Use <name>: lowercase letters, digits, - or _, at most 38 characters.",
        )
    taken = session.scalar(select(Concept.id).where(Concept.token == token)) is not None
    return TokenCheck(
        token=token,
        valid=True,
        available=not taken,
        message=f"{token} is already used by another concept." if taken else f"{token} is free.",
    )


# -- create ------------------------------------------------------------------------------------


def create_concept(
    session: Session,
    settings: Settings,
    user: User,
    *,
    name: str,
    token: str,
    superclass: str,
    uploads: list[Upload],
    steps: int | None,
    seed: int | None,
) -> tuple[Concept, Job]:
    """Store the concept (fitting), its sanitized photos, and queue its fit job."""
    name = name.strip()
    superclass = superclass.strip().lower()
    if not 1 <= len(name) <= 100:
        raise ConceptError(422, "Give the concept a name (1–100 characters).")
    check = check_token(session, token)
    if not check.valid:
        raise ConceptError(422, check.message)
    if not check.available:
        raise ConceptError(409, check.message)
    if not SUPERCLASS_RE.match(superclass):
        raise ConceptError(422, "The superclass is a plain noun such as dog, person or toy.")
    if not MIN_PHOTOS <= len(uploads) <= MAX_PHOTOS:
        raise ConceptError(
            422, f"Upload {MIN_PHOTOS} to {MAX_PHOTOS} photos (4 work well); got {len(uploads)}."
        )
    steps = settings.default_fit_steps if steps is None else steps
    if not 1 <= steps <= MAX_FIT_STEPS:
        raise ConceptError(422, f"Steps must be between 1 and {MAX_FIT_STEPS}.")
    if seed is not None and not 0 <= seed < 2**32:
        raise ConceptError(422, "The seed must be between 0 and 4294967295.")
    seed = seed if seed is not None else int.from_bytes(uuid.uuid4().bytes[:4], "big")

    store = DatabaseBlobStore(session)
    concept = Concept(
        owner_id=user.id,
        name=name,
        token=token,
        superclass=superclass,
        visibility=Visibility.private,
        base_model=settings.base_model,
        status=ConceptStatus.fitting,
        settings={"steps": steps, "seed": seed, "photos": len(uploads)},
    )
    session.add(concept)
    session.flush()
    for position, upload in enumerate(uploads):
        if len(upload.data) > MAX_PHOTO_BYTES:
            raise ConceptError(413, f"{upload.filename}: larger than 10 MB.")
        try:
            image = sanitize_image(upload.data, upload.filename)
        except UploadRejected as exc:
            raise ConceptError(exc.status_code, str(exc)) from None
        blob_id = store.put(image.data, image.content_type)
        session.add(
            ConceptPhoto(
                concept_id=concept.id,
                blob_id=blob_id,
                position=position,
                width=image.width,
                height=image.height,
            )
        )
    job = create_job(
        session,
        JobKind.fit,
        owner_id=user.id,
        concept_id=concept.id,
        params={
            "token": token,
            "superclass": superclass,
            "steps": steps,
            "seed": seed,
            "samples": 2,
        },
    )
    return concept, job


# -- read --------------------------------------------------------------------------------------


def latest_fit_job(session: Session, concept: Concept) -> Job | None:
    return session.scalar(
        select(Job)
        .where(Job.concept_id == concept.id, Job.kind == JobKind.fit)
        .order_by(Job.created_at.desc())
        .limit(1)
    )


def job_ref(session: Session, job: Job) -> JobRef:
    return JobRef(
        id=job.id,
        state=job.state.value,
        queue_position=queue_position(session, job),
        error=job.error,
    )


def effective_status(concept: Concept, job: Job | None) -> str:
    """The concept's status, or its fit job's failure when the worker left it `fitting`."""
    failed = (JobState.failed, JobState.canceled)
    if concept.status == ConceptStatus.fitting and job is not None and job.state in failed:
        return job.state.value
    return concept.status.value


def image_ref(image: GeneratedImage) -> ImageRef:
    return ImageRef(
        id=image.id,
        url=f"/api/images/{image.id}",
        seed=image.seed,
        width=image.width,
        height=image.height,
    )


def sample_images(session: Session, concept: Concept) -> list[GeneratedImage]:
    generations = session.scalars(
        select(Generation)
        .where(Generation.concept_id == concept.id, Generation.owner_id == concept.owner_id)
        .order_by(Generation.created_at)
    )
    return [img for gen in generations if gen.params.get("sample") for img in gen.images]


def concept_out(session: Session, viewer: Viewer, concept: Concept) -> ConceptOut:
    is_owner = viewer.user is not None and viewer.user.id == concept.owner_id
    job = latest_fit_job(session, concept)
    owner = session.get(User, concept.owner_id)
    return ConceptOut(
        id=concept.id,
        name=concept.name,
        token=concept.token,
        superclass=concept.superclass,
        visibility=concept.visibility,
        status=effective_status(concept, job),
        base_model=concept.base_model,
        owner=owner.username if owner else "?",
        is_owner=is_owner,
        created_at=concept.created_at,
        settings=concept.settings,
        samples=[image_ref(i) for i in sample_images(session, concept)],
        photos=[
            PhotoRef(
                id=p.id,
                url=f"/api/concepts/{concept.id}/photos/{p.id}",
                width=p.width,
                height=p.height,
            )
            for p in concept.photos
        ]
        if is_owner
        else [],
        file_url=f"/api/concepts/{concept.id}/file" if concept.file_blob_id else None,
        page_url=f"/concepts/{concept.id}",
        job=job_ref(session, job) if job is not None and is_owner else None,
        share_link_active=is_owner and active_share_link(session, concept) is not None,
    )


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
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Concept.created_at.desc(), Concept.id)
        .offset((page - 1) * per_page)
        .limit(per_page)
    )
    return ConceptPage(
        items=[concept_out(session, viewer, c) for c in rows],
        page=page,
        per_page=per_page,
        total=int(total),
    )


# -- change ------------------------------------------------------------------------------------


def update_concept(concept: Concept, name: str | None, visibility: Visibility | None) -> Concept:
    if name is not None:
        concept.name = name.strip() or concept.name
    if visibility is not None:
        concept.visibility = visibility
    return concept


def active_share_link(session: Session, concept: Concept) -> ShareLink | None:
    return session.scalar(
        select(ShareLink).where(ShareLink.concept_id == concept.id, ShareLink.revoked_at.is_(None))
    )


def revoke_share_links(session: Session, concept: Concept) -> int:
    links = session.scalars(
        select(ShareLink).where(ShareLink.concept_id == concept.id, ShareLink.revoked_at.is_(None))
    ).all()
    for link in links:
        link.revoked_at = utcnow()
    return len(links)


def create_share_link(session: Session, settings: Settings, concept: Concept) -> str:
    """A fresh unguessable link (the previous one is revoked); private concepts become unlisted."""
    revoke_share_links(session, concept)
    secret = new_token()
    session.add(ShareLink(concept_id=concept.id, token_hash=hash_token(secret)))
    if concept.visibility == Visibility.private:
        concept.visibility = Visibility.unlisted
    session.flush()
    return f"{settings.origin}/s/{secret}"


def find_share_link(session: Session, secret: str) -> ShareLink | None:
    """The unrevoked link for this secret whose concept is still shared (not private)."""
    link = session.scalar(
        select(ShareLink).where(
            ShareLink.token_hash == hash_token(secret), ShareLink.revoked_at.is_(None)
        )
    )
    if link is None:
        return None
    concept = session.get(Concept, link.concept_id)
    if concept is None or concept.visibility == Visibility.private:
        return None
    return link


def delete_concept(session: Session, concept: Concept) -> None:
    """Delete the concept with its photos, every generation and image made on its page,
    its fit jobs and checkpoints, and its file."""
    photo_blobs = select(ConceptPhoto.blob_id).where(ConceptPhoto.concept_id == concept.id)
    image_blobs = (
        select(GeneratedImage.blob_id)
        .join(Generation, GeneratedImage.generation_id == Generation.id)
        .where(Generation.concept_id == concept.id)
    )
    checkpoint_blobs = select(Job.checkpoint_blob_id).where(
        Job.concept_id == concept.id, Job.checkpoint_blob_id.is_not(None)
    )
    blob_ids = {
        *session.scalars(photo_blobs),
        *session.scalars(image_blobs),
        *session.scalars(checkpoint_blobs),
    }
    if concept.file_blob_id is not None:
        blob_ids.add(concept.file_blob_id)
    for job in session.scalars(select(Job).where(Job.concept_id == concept.id)):
        if not job.state.finished:
            job.cancel_requested = True  # a worker mid-fit stops; its row goes below
    session.flush()
    session.execute(delete(Generation).where(Generation.concept_id == concept.id))
    session.execute(delete(Job).where(Job.concept_id == concept.id))
    session.delete(concept)
    session.flush()
    if blob_ids:
        session.execute(delete(Blob).where(Blob.id.in_(blob_ids)))


# -- files -------------------------------------------------------------------------------------


def known_base_fingerprint(session: Session, settings: Settings) -> str:
    """The base fingerprint the workers recorded in the newest concept they fitted here
    (imports never count, so a forged first import cannot become the yardstick)."""
    fitted = select(Job.concept_id).where(Job.kind == JobKind.fit, Job.state == JobState.succeeded)
    blob_id = session.scalar(
        select(Concept.file_blob_id)
        .where(
            Concept.base_model == settings.base_model,
            Concept.file_blob_id.is_not(None),
            Concept.id.in_(fitted),
        )
        .order_by(Concept.updated_at.desc())
        .limit(1)
    )
    blob = DatabaseBlobStore(session).get(blob_id) if blob_id else None
    return filecheck.recorded_fingerprint(blob.data) if blob else ""


def import_concept(
    session: Session,
    settings: Settings,
    user: User,
    data: bytes,
    info: filecheck.ConceptFileInfo,
    name: str | None,
    visibility: Visibility,
) -> Concept:
    """A ready concept from an uploaded file that `filecheck.inspect_concept_file` accepted."""
    if not TOKEN_RE.match(info.token):
        raise ConceptError(422, f"The concept's token {info.token!r} is not of the form <name>.")
    expected = known_base_fingerprint(session, settings)
    if expected and info.base_fingerprint != expected:
        raise ConceptError(
            422,
            "This concept was made for another base model "
            f"({info.base_model_id or 'unknown'}); this studio runs {settings.base_model}.",
        )
    check = check_token(session, info.token)
    if not check.available:
        raise ConceptError(409, f"{info.token} is already used by another concept here.")
    blob_id = DatabaseBlobStore(session).put(data, "application/octet-stream")
    concept = Concept(
        owner_id=user.id,
        name=(name or "").strip()[:100] or info.token.strip("<>"),
        token=info.token,
        superclass=info.superclass[:40],
        visibility=visibility,
        base_model=settings.base_model,
        status=ConceptStatus.ready,
        settings={"imported": True, "training": filecheck.training_settings(info)},
        file_blob_id=blob_id,
    )
    session.add(concept)
    session.flush()
    return concept


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


def usable(session: Session, viewer: Viewer, concept: Concept) -> bool:
    return concept.status == ConceptStatus.ready and can(session, viewer, concept, Need.use)
