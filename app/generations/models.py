"""Generations (one prompt run) and the images they produced."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.orm import Base, IdMixin, TimestampMixin


def image_url(image_id: uuid.UUID) -> str:
    """Where the API serves a generated image (its id is known before the row exists)."""
    return f"/api/images/{image_id}"


class Generation(IdMixin, TimestampMixin, Base):
    __tablename__ = "generations"

    owner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    concept_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("concepts.id", ondelete="CASCADE"), index=True
    )
    """The concept whose page started it (history grid); others may appear in the prompt."""
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    images: Mapped[list[GeneratedImage]] = relationship(
        back_populates="generation", cascade="all, delete-orphan", order_by="GeneratedImage.index"
    )


class GeneratedImage(IdMixin, TimestampMixin, Base):
    __tablename__ = "images"

    generation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("generations.id", ondelete="CASCADE"), index=True
    )
    blob_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("blobs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(50), default="image/png")

    generation: Mapped[Generation] = relationship(back_populates="images")
