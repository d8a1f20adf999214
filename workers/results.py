"""Database reads and writes of the fit and generate handlers (no torch here)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.concepts.models import CONCEPT_CONTENT_TYPE, Concept, ConceptStatus
from app.db import session_scope
from app.generations.models import GeneratedImage, Generation
from app.jobs.models import Job, JobState
from app.storage import DatabaseBlobStore
from app.storage.models import Blob


@dataclass
class FitInputs:
    photos: list[bytes]
    checkpoint: bytes | None
    masks: list[bytes | None] = field(default_factory=list)
    """Each photo's mask PNG (None: that photo has none); empty when no photo has one."""


@dataclass
class ResultImage:
    """One finished image, its id chosen before storing so events can name it."""

    id: uuid.UUID
    index: int
    seed: int
    width: int
    height: int
    png: bytes


def load_fit_inputs(concept_id: uuid.UUID, checkpoint_blob_id: uuid.UUID | None) -> FitInputs:
    with session_scope() as session:
        concept = session.get(Concept, concept_id)
        if concept is None:
            raise LookupError("The concept of this fit no longer exists.")
        photos = [_blob_data(session, photo.blob_id) for photo in concept.photos]
        masks = [
            None if photo.mask_blob_id is None else _blob_data(session, photo.mask_blob_id)
            for photo in concept.photos
        ]
        checkpoint = None
        if checkpoint_blob_id is not None:
            checkpoint = _blob_data(session, checkpoint_blob_id)
        return FitInputs(photos, checkpoint, masks if any(m is not None for m in masks) else [])


@dataclass
class ConceptFile:
    id: uuid.UUID
    token: str
    data: bytes


def load_concept_files(concept_ids: list[uuid.UUID]) -> list[ConceptFile]:
    """The concept files of the ready concepts named; LookupError says which one is missing."""
    files = []
    with session_scope() as session:
        for concept_id in concept_ids:
            concept = session.get(Concept, concept_id)
            if concept is None:
                raise LookupError("A concept in this prompt no longer exists.")
            if concept.status != ConceptStatus.ready or concept.file_blob_id is None:
                raise LookupError(f"The concept {concept.token} is not ready yet.")
            files.append(
                ConceptFile(concept.id, concept.token, _blob_data(session, concept.file_blob_id))
            )
    return files


def _blob_data(session: Session, blob_id: uuid.UUID) -> bytes:
    data = session.scalar(select(Blob.data).where(Blob.id == blob_id))
    if data is None:
        raise LookupError(f"blob {blob_id} is missing")
    return bytes(data)


def save_checkpoint(job_id: uuid.UUID, worker_id: str, data: bytes, progress: float) -> bool:
    """Replace the job's checkpoint blob, if this worker still owns the job."""
    with session_scope() as session:
        job = session.scalar(
            select(Job)
            .where(Job.id == job_id, Job.state == JobState.running, Job.worker_id == worker_id)
            .with_for_update()
        )
        if job is None:
            return False
        old = job.checkpoint_blob_id
        job.checkpoint_blob_id = DatabaseBlobStore(session).put(data, "application/octet-stream")
        job.progress = progress
        if old is not None:
            DatabaseBlobStore(session).delete(old)
    return True


def store_images(
    session: Session, generation_id: uuid.UUID, images: list[ResultImage]
) -> list[uuid.UUID]:
    blobs = DatabaseBlobStore(session)
    for image in images:
        session.add(
            GeneratedImage(
                id=image.id,
                generation_id=generation_id,
                blob_id=blobs.put(image.png, "image/png"),
                index=image.index,
                seed=image.seed,
                width=image.width,
                height=image.height,
            )
        )
    return [image.id for image in images]


def store_fit(
    concept_id: uuid.UUID,
    concept_file: bytes,
    prompt: str,
    sample_params: dict[str, Any],
    samples: list[ResultImage],
    sample_generation_id: uuid.UUID,
    architecture: str = "sd",
) -> Callable[[Session], None]:
    """The JobOutcome.store of a fit: its concept file and sample generation (the concept
    becomes `ready` as the job succeeds, in `app.concepts.status`)."""

    def store(session: Session) -> None:
        concept = session.get(Concept, concept_id)
        if concept is None:
            raise LookupError("The concept of this fit no longer exists.")
        concept.file_blob_id = DatabaseBlobStore(session).put(concept_file, CONCEPT_CONTENT_TYPE)
        concept.settings = {**(concept.settings or {}), "architecture": architecture}
        if samples:
            session.add(
                Generation(
                    id=sample_generation_id,
                    owner_id=concept.owner_id,
                    concept_id=concept.id,
                    prompt=prompt,
                    negative_prompt="",
                    params={"sample": True, **sample_params},
                )
            )
            session.flush()
            store_images(session, sample_generation_id, samples)

    return store
