"""A concept's status, owned here: created `fitting` (or `ready` when imported), then its fit
job's end decides: succeeded → ready, failed → failed, canceled → canceled; a failed or
canceled concept is `fitting` again when its fit is started again."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from app.concepts.models import Concept, ConceptStatus
from app.jobs.models import JobState

FIT_OUTCOME = {
    JobState.succeeded: ConceptStatus.ready,
    JobState.failed: ConceptStatus.failed,
    JobState.canceled: ConceptStatus.canceled,
}
RESTARTABLE = frozenset({ConceptStatus.failed, ConceptStatus.canceled})


def fit_ended(session: Session, concept_id: uuid.UUID, state: JobState) -> None:
    """Move a fitting concept on when its fit job ends (in the job's final transaction)."""
    concept = session.get(Concept, concept_id)
    if concept is not None and concept.status == ConceptStatus.fitting:
        concept.status = FIT_OUTCOME[state]


def fit_restarted(concept: Concept) -> None:
    """A failed or canceled concept whose fit was queued again (`refit.fit_again`)."""
    if concept.status in RESTARTABLE:
        concept.status = ConceptStatus.fitting
