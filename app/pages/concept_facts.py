"""What the concept page says about a concept beyond its API fields: the facts of the fit
that made it (fitted here or recorded in an imported file), its samples' prompt, and whether
samples are still being drawn."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.concepts.models import Concept
from app.generations.models import Generation
from app.jobs.models import Job, JobState
from app.jobs.schemas import JobRef


def training_facts(concept_settings: dict[str, Any]) -> dict[str, Any]:
    """Steps, photos, final loss, resolution, masked loss: from the file's `training` record
    when imported, else from the settings the fit was started with (a fit from before masks
    existed was unmasked; an imported file that does not say is left unsaid)."""
    raw = concept_settings.get("training")
    training: dict[str, Any] = raw if isinstance(raw, dict) else {}
    masked = training.get("masked", concept_settings.get("masked"))
    if masked is None and not concept_settings.get("imported"):
        masked = False
    facts = {
        "steps": training.get("steps", concept_settings.get("steps")),
        "photos": training.get("n_images", concept_settings.get("photos")),
        "final_loss": training.get("final_loss"),
        "resolution": training.get("resolution"),
        "masked": None if masked is None else bool(masked),
    }
    return {k: v for k, v in facts.items() if v is not None}


def _sample_generations(session: Session, concept: Concept) -> list[Generation]:
    rows = session.scalars(
        select(Generation)
        .where(Generation.concept_id == concept.id, Generation.owner_id == concept.owner_id)
        .order_by(Generation.created_at)
    )
    return [g for g in rows if g.params.get("sample")]


def sample_prompt(session: Session, concept: Concept) -> str | None:
    """The prompt the concept's samples were drawn with."""
    samples = [g for g in _sample_generations(session, concept) if g.images]
    return samples[0].prompt if samples else None


def sample_strength(session: Session, concept: Concept) -> float | None:
    """The strength the concept's samples were drawn at (the page said 1.0 for all of them;
    they are drawn at the default, 0.5 since the one-default change)."""
    samples = [g for g in _sample_generations(session, concept) if g.images]
    strength = samples[0].params.get("strength") if samples else None
    return float(strength) if isinstance(strength, int | float) else None


def samples_pending(session: Session, concept: Concept) -> bool:
    """A sample generation (after an import) is queued or running."""
    active = (JobState.queued, JobState.running)
    pending = session.scalars(
        select(Job.generation_id).where(Job.concept_id == concept.id, Job.state.in_(active))
    ).all()
    return any(g.id in pending for g in _sample_generations(session, concept))


def _duration(seconds: float) -> str:
    s = max(0, round(seconds / 30) * 30 if seconds > 120 else round(seconds / 5) * 5)
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def wait_text(job: JobRef) -> str:
    """What the page says while a job is queued (static/js/waiting.js says it live)."""
    where = "next up" if (job.queue_position or 1) <= 1 else f"position {job.queue_position}"
    if job.wait_s is None:
        return f"Queued — {where}."
    if job.wait_s < 5:
        return f"Queued — {where}, starting any moment."
    return f"Queued — {where}, starts in about {_duration(job.wait_s)}."
