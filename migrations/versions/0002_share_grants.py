"""share grants

Revision ID: 0002_share_grants
Revises: 0001
Create Date: 2026-11-27 04:41:09.249611
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_share_grants"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "share_grants",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("share_link_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["share_link_id"],
            ["share_links.id"],
            name=op.f("fk_share_grants_share_link_id_share_links"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_share_grants_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_grants")),
        sa.UniqueConstraint("user_id", "share_link_id", name=op.f("uq_share_grants_user_id")),
    )
    with op.batch_alter_table("share_grants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_share_grants_share_link_id"), ["share_link_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_share_grants_user_id"), ["user_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("share_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_share_grants_user_id"))
        batch_op.drop_index(batch_op.f("ix_share_grants_share_link_id"))

    op.drop_table("share_grants")
