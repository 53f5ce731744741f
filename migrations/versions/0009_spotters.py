"""spotters: pairings and share links

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 13:02:23.720561

Chained after the drills migration (0008), written at the same time; if 0008 does not land,
set `down_revision` back to "0007".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spotter_links",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("runner_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=60), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("spotter_links", schema=None) as batch_op:
        batch_op.create_index("ix_spotter_links_runner", ["runner_id"], unique=False)

    op.create_table(
        "spotter_pairings",
        sa.Column("runner_id", sa.String(length=36), nullable=False),
        sa.Column("spotter_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("runner_id", "spotter_id"),
    )
    with op.batch_alter_table("spotter_pairings", schema=None) as batch_op:
        batch_op.create_index("ix_spotter_pairings_spotter", ["spotter_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("spotter_pairings", schema=None) as batch_op:
        batch_op.drop_index("ix_spotter_pairings_spotter")
    op.drop_table("spotter_pairings")
    with op.batch_alter_table("spotter_links", schema=None) as batch_op:
        batch_op.drop_index("ix_spotter_links_runner")
    op.drop_table("spotter_links")
