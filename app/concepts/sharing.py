"""Share links: one active unguessable link per concept, revocable; holders may view and use."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.concepts.models import Concept, ShareLink, Visibility
from app.config import Settings
from app.orm import utcnow
from app.security.tokens import hash_token, new_token


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
