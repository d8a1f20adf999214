"""Concepts: create (photos → fit job), change and delete.

Reading is in `views`, sharing in `sharing`, naming rules in `rules`, the status in `status`,
importing a concept file in `importing`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.concepts.models import (
    NAME_MAX_CHARS,
    Concept,
    ConceptPhoto,
    ConceptStatus,
    Visibility,
)
from app.concepts.rules import (
    MAX_PHOTO_BYTES,
    MAX_PHOTOS,
    MIN_PHOTOS,
    SUPERCLASS_RE,
    check_token,
    pair_masks,
)
from app.config import Settings
from app.generations.models import GeneratedImage, Generation
from app.jobs.models import Job
from app.jobs.params import (
    FIT_STEPS_MAX,
    FIT_STEPS_MIN,
    SEED_MAX,
    SEED_MIN,
    FitParams,
    SamplePolicy,
    random_seed,
)
from app.jobs.queue import create_job
from app.storage import DatabaseBlobStore
from app.storage.models import Blob
from app.uploads.images import UploadRejected, sanitize_image
from app.uploads.masks import sanitize_mask
from app.users.models import User
from app.webhooks.service import callback_for


class ConceptError(Exception):
    """A refusal with an HTTP status and a message for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


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
    masks: list[Upload] | None = None,
    callback_url: str | None = None,
) -> tuple[Concept, Job]:
    """Store the concept (fitting), its sanitized photos (each with its mask, when masks were
    given: one per photo, named like it), and queue its fit job (whose `callback_url`,
    already checked, is told when it ends)."""
    name = name.strip()
    superclass = superclass.strip().lower()
    if not 1 <= len(name) <= NAME_MAX_CHARS:
        raise ConceptError(422, f"Give the concept a name (1–{NAME_MAX_CHARS} characters).")
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
    mask_of: list[Upload | None] = [None] * len(uploads)
    if masks:
        try:
            pairs = pair_masks([u.filename for u in uploads], [m.filename for m in masks])
        except ValueError as exc:
            raise ConceptError(422, str(exc)) from None
        mask_of = [masks[m] for m in pairs]
    steps = settings.default_fit_steps if steps is None else steps
    if not FIT_STEPS_MIN <= steps <= FIT_STEPS_MAX:
        raise ConceptError(422, f"Steps must be between {FIT_STEPS_MIN} and {FIT_STEPS_MAX}.")
    if seed is not None and not SEED_MIN <= seed <= SEED_MAX:
        raise ConceptError(422, f"The seed must be between {SEED_MIN} and {SEED_MAX}.")
    seed = seed if seed is not None else random_seed()

    store = DatabaseBlobStore(session)
    concept = Concept(
        owner_id=user.id,
        name=name,
        token=token,
        superclass=superclass,
        visibility=Visibility.private,
        base_model=settings.base_model,
        status=ConceptStatus.fitting,
        settings={"steps": steps, "seed": seed, "photos": len(uploads), "masked": bool(masks)},
    )
    session.add(concept)
    session.flush()
    for position, (upload, mask) in enumerate(zip(uploads, mask_of, strict=True)):
        session.add(_photo(store, concept, position, upload, mask))
    params = FitParams(
        token=token,
        superclass=superclass,
        steps=steps,
        seed=seed,
        samples=SamplePolicy(steps=settings.sample_steps),
    )
    job = create_job(
        session,
        params,
        owner_id=user.id,
        concept_id=concept.id,
        callback_url=callback_for(user, callback_url),
    )
    return concept, job


def _photo(
    store: DatabaseBlobStore, concept: Concept, position: int, upload: Upload, mask: Upload | None
) -> ConceptPhoto:
    """A training photo row: the sanitized photo and, when given, its mask at the same size."""
    for file in (upload, mask):
        if file is not None and len(file.data) > MAX_PHOTO_BYTES:
            raise ConceptError(413, f"{file.filename}: larger than 10 MB.")
    try:
        image = sanitize_image(upload.data, upload.filename)
        mask_png = None
        if mask is not None:
            size = (image.width, image.height)
            mask_png = sanitize_mask(
                mask.data, mask.filename, upload.filename, image.source_size, size
            )
    except UploadRejected as exc:
        raise ConceptError(exc.status_code, str(exc)) from None
    return ConceptPhoto(
        concept_id=concept.id,
        blob_id=store.put(image.data, image.content_type),
        mask_blob_id=None if mask_png is None else store.put(mask_png, "image/png"),
        position=position,
        width=image.width,
        height=image.height,
    )


def update_concept(concept: Concept, name: str | None, visibility: Visibility | None) -> Concept:
    if name is not None:
        concept.name = name.strip() or concept.name
    if visibility is not None:
        concept.visibility = visibility
    return concept


def delete_concept(session: Session, concept: Concept) -> None:
    """Delete the concept with its photos and masks, every generation and image made on its page,
    its fit jobs and checkpoints, and its file."""
    photo_blobs = select(ConceptPhoto.blob_id).where(ConceptPhoto.concept_id == concept.id)
    mask_blobs = select(ConceptPhoto.mask_blob_id).where(
        ConceptPhoto.concept_id == concept.id, ConceptPhoto.mask_blob_id.is_not(None)
    )
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
        *session.scalars(mask_blobs),
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
