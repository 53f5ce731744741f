"""privacy: activity visibility and privacy zones

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 13:45:00.000000

Chained after the spotters migration (0009), the newest revision when this was written. If
another 0010 lands first, rename this one and set `down_revision` to that revision's id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_settings",
        sa.Column("runner_id", sa.String(length=36), nullable=False),
        sa.Column("activity_visibility", sa.String(length=10), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("runner_id"),
    )
    op.create_table(
        "privacy_zones",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("runner_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("radius_m", sa.Float(), nullable=False),
        sa.Column("label", sa.String(length=60), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("privacy_zones", schema=None) as batch_op:
        batch_op.create_index("ix_privacy_zones_runner", ["runner_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("privacy_zones", schema=None) as batch_op:
        batch_op.drop_index("ix_privacy_zones_runner")
    op.drop_table("privacy_zones")
    op.drop_table("privacy_settings")
