"""races and live fix chunks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 12:11:30.510943
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "race_fix_chunks",
        sa.Column("race_id", sa.String(length=36), nullable=False),
        sa.Column("runner_id", sa.String(length=36), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("race_id", "runner_id", "chunk"),
    )
    op.create_table(
        "races",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("title", sa.String(length=80), nullable=False),
        sa.Column("distance_m", sa.Float(), nullable=False),
        sa.Column("scheduled_at", sa.Float(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("organiser_id", sa.String(length=36), nullable=False),
        sa.Column("club_id", sa.String(length=100), nullable=True),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("start_at", sa.Float(), nullable=True),
        sa.Column("registered", sa.Integer(), nullable=False),
        sa.Column(
            "results",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("races", schema=None) as batch_op:
        batch_op.create_index("ix_races_scheduled", ["scheduled_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("races", schema=None) as batch_op:
        batch_op.drop_index("ix_races_scheduled")

    op.drop_table("races")
    op.drop_table("race_fix_chunks")
