"""Concepts (a learned subject), their training photos and their share links."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.orm import Base, IdMixin, TimestampMixin, utcnow

NAME_MAX_CHARS = 100
TOKEN_MAX_CHARS = 40
SUPERCLASS_MAX_CHARS = 40


class Visibility(enum.StrEnum):
    private = "private"
    unlisted = "unlisted"
    public = "public"


CONCEPT_CONTENT_TYPE = "application/x-perfusion-concept"
"""The content type a concept file's blob is stored under, fitted or imported."""


class ConceptStatus(enum.StrEnum):
    fitting = "fitting"
    ready = "ready"
    failed = "failed"
    canceled = "canceled"


class Concept(IdMixin, TimestampMixin, Base):
    __tablename__ = "concepts"
    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(NAME_MAX_CHARS))
    token: Mapped[str] = mapped_column(String(TOKEN_MAX_CHARS), unique=True)
    """Trigger word used in prompts, e.g. `<rex>`; unique so any prompt resolves unambiguously."""
    superclass: Mapped[str] = mapped_column(String(SUPERCLASS_MAX_CHARS))
    visibility: Mapped[Visibility] = mapped_column(
        Enum(Visibility, native_enum=False, length=16), default=Visibility.private
    )
    base_model: Mapped[str] = mapped_column(String(500))
    status: Mapped[ConceptStatus] = mapped_column(
        Enum(ConceptStatus, native_enum=False, length=16), default=ConceptStatus.fitting
    )
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    file_blob_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("blobs.id", ondelete="SET NULL")
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    photos: Mapped[list[ConceptPhoto]] = relationship(
        back_populates="concept", cascade="all, delete-orphan", order_by="ConceptPhoto.position"
    )


class ConceptPhoto(IdMixin, TimestampMixin, Base):
    __tablename__ = "concept_photos"

    concept_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("concepts.id", ondelete="CASCADE"), index=True
    )
    blob_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("blobs.id", ondelete="CASCADE"))
    mask_blob_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("blobs.id", ondelete="SET NULL")
    )
    """The subject's mask (greyscale PNG the photo's size, white = subject), if one was given."""
    position: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)

    concept: Mapped[Concept] = relationship(back_populates="photos")


class ShareLink(IdMixin, TimestampMixin, Base):
    __tablename__ = "share_links"

    concept_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("concepts.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    revoked_at: Mapped[datetime | None] = mapped_column()


class ShareGrant(IdMixin, TimestampMixin, Base):
    """A signed-in person opened a share link: they may view and use the concept while the
    link stays unrevoked (anonymous visitors hold the same right in a signed cookie)."""

    __tablename__ = "share_grants"
    __table_args__ = (UniqueConstraint("user_id", "share_link_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    share_link_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("share_links.id", ondelete="CASCADE"), index=True
    )
