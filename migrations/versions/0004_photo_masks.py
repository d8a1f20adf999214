"""photo masks: an optional subject mask blob beside each training photo

Revision ID: 0004_photo_masks
Revises: 0003_webhooks
Create Date: 2026-12-01 12:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_photo_masks"
down_revision: str | None = "0003_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("concept_photos", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mask_blob_id", sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_concept_photos_mask_blob_id_blobs"),
            "blobs",
            ["mask_blob_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("concept_photos", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_concept_photos_mask_blob_id_blobs"), type_="foreignkey"
        )
        batch_op.drop_column("mask_blob_id")
