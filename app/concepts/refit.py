"""Fit again: a canceled or failed fit restarts on the same photos with the same settings."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.concepts import status
from app.concepts.models import Concept
from app.concepts.service import ConceptError
from app.concepts.views import latest_fit_job
from app.jobs.models import Job
from app.jobs.params import FitParams
from app.jobs.queue import create_job


def fit_again(session: Session, concept: Concept) -> Job:
    """Queue a new fit job with the last one's parameters and callback URL; the concept is
    `fitting` again."""
    previous = latest_fit_job(session, concept)
    if concept.status not in status.RESTARTABLE or previous is None:
        raise ConceptError(409, "Only a canceled or failed fit can be started again.")
    if not concept.photos:
        raise ConceptError(409, "This concept has no photos to learn from.")
    params = FitParams.model_validate(previous.params)
    status.fit_restarted(concept)
    return create_job(
        session,
        params,
        owner_id=concept.owner_id,
        concept_id=concept.id,
        callback_url=previous.callback_url,
    )
