"""Who may do what with a concept: the ONE place authorization is decided.

- owner: everything (view, use, manage: rename, visibility, share, delete, photos);
- public concept: anyone may view it (page, samples, file); signed-in people may use it;
- unlisted concept: whoever holds an unrevoked share link of it (opened while signed in:
  a `ShareGrant` row; opened anonymously: the signed `studio_shares` cookie);
- nobody else. Forbidden and unknown both answer 404, so ids reveal nothing.

Generations and their images belong to the person who ran them; a concept's sample images
(generations with params {"sample": true}) are visible to whoever may view the concept.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import uuid
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import ColumnElement, and_, false, or_, select
from sqlalchemy.orm import Session

from app.auth.deps import OptionalUser
from app.concepts.models import Concept, ShareGrant, ShareLink, Visibility
from app.config import get_settings
from app.generations.models import GeneratedImage, Generation
from app.users.models import User

SHARES_COOKIE = "studio_shares"
MAX_COOKIE_SHARES = 30


class Need(enum.StrEnum):
    view = "view"
    use = "use"
    manage = "manage"


@dataclass(frozen=True)
class Viewer:
    """The person asking: maybe signed in, maybe holding share links from a cookie."""

    user: User | None
    cookie_links: frozenset[uuid.UUID] = field(default_factory=frozenset)

    @property
    def user_id(self) -> uuid.UUID | None:
        return self.user.id if self.user is not None else None

    @property
    def key(self) -> tuple[uuid.UUID | None, tuple[uuid.UUID, ...]]:
        """Everything about the viewer these rules look at: what a cached answer is keyed by
        (app.readcache), so it is only ever replayed to a viewer they treat the same."""
        return (self.user_id, tuple(sorted(self.cookie_links)))


def not_found(what: str = "Concept") -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found.")


# -- the signed cookie of share links opened without an account -------------------------------


def _sign(payload: str) -> str:
    key = ("shares:" + get_settings().secret()).encode()
    digest = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def encode_shares_cookie(link_ids: list[uuid.UUID]) -> str:
    payload = "-".join(i.hex for i in link_ids[-MAX_COOKIE_SHARES:])
    return f"{payload}.{_sign(payload)}"


def decode_shares_cookie(value: str | None) -> list[uuid.UUID]:
    if not value or "." not in value:
        return []
    payload, signature = value.rsplit(".", 1)
    if not hmac.compare_digest(signature, _sign(payload)):
        return []
    try:
        return [uuid.UUID(hex=part) for part in payload.split("-") if part]
    except ValueError:
        return []


async def get_viewer(request: Request, user: OptionalUser) -> Viewer:
    links = decode_shares_cookie(request.cookies.get(SHARES_COOKIE))
    return Viewer(user=user, cookie_links=frozenset(links))


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


# -- the rules ----------------------------------------------------------------------------------


def _held_link_concepts(viewer: Viewer):  # type: ignore[no-untyped-def]
    """Concept ids of unrevoked share links the viewer holds (a subquery)."""
    held: list[ColumnElement[bool]] = []
    if viewer.cookie_links:
        held.append(ShareLink.id.in_(viewer.cookie_links))
    if viewer.user is not None:
        held.append(
            ShareLink.id.in_(
                select(ShareGrant.share_link_id).where(ShareGrant.user_id == viewer.user.id)
            )
        )
    return select(ShareLink.concept_id).where(
        ShareLink.revoked_at.is_(None), or_(*held) if held else false()
    )


def concept_filter(viewer: Viewer, need: Need = Need.view) -> ColumnElement[bool]:
    """A SQL condition selecting exactly the concepts `viewer` may `need`."""
    if need == Need.manage:
        return Concept.owner_id == viewer.user_id if viewer.user is not None else false()
    if need == Need.use and viewer.user is None:
        return false()
    allowed: list[ColumnElement[bool]] = [Concept.visibility == Visibility.public]
    if viewer.user is not None:
        allowed.append(Concept.owner_id == viewer.user.id)
    allowed.append(
        and_(Concept.visibility == Visibility.unlisted, Concept.id.in_(_held_link_concepts(viewer)))
    )
    return or_(*allowed)


def get_concept(
    session: Session, viewer: Viewer, concept_id: uuid.UUID, need: Need = Need.view
) -> Concept:
    """The concept if `viewer` may `need` it, else 404 (never 403)."""
    concept = session.scalar(
        select(Concept).where(Concept.id == concept_id, concept_filter(viewer, need))
    )
    if concept is None:
        raise not_found()
    return concept


def can(session: Session, viewer: Viewer, concept: Concept, need: Need) -> bool:
    return (
        session.scalar(
            select(Concept.id).where(Concept.id == concept.id, concept_filter(viewer, need))
        )
        is not None
    )


def get_generation(session: Session, viewer: Viewer, generation_id: uuid.UUID) -> Generation:
    """The generation if it is the viewer's own, or a sample of a concept they may view."""
    generation = session.get(Generation, generation_id)
    if generation is None or not _may_see_generation(session, viewer, generation):
        raise not_found("Generation")
    return generation


def get_image(session: Session, viewer: Viewer, image_id: uuid.UUID) -> GeneratedImage:
    image = session.get(GeneratedImage, image_id)
    if image is None or not _may_see_generation(session, viewer, image.generation):
        raise not_found("Image")
    return image


def _may_see_generation(session: Session, viewer: Viewer, generation: Generation) -> bool:
    if viewer.user is not None and generation.owner_id == viewer.user.id:
        return True
    if generation.params.get("sample") and generation.concept_id is not None:
        concept = session.get(Concept, generation.concept_id)
        return concept is not None and can(session, viewer, concept, Need.view)
    return False
