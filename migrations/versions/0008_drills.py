"""drills and drill results

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 13:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drills",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("title", sa.String(length=80), nullable=False),
        sa.Column("coach_id", sa.String(length=36), nullable=False),
        sa.Column("club_id", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("start_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("sync_score", sa.Float(), nullable=True),
        sa.Column("participants", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "drill_results",
        sa.Column("drill_id", sa.String(length=36), nullable=False),
        sa.Column("runner_id", sa.String(length=36), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("misses", sa.Integer(), nullable=False),
        sa.Column("median_ms", sa.Float(), nullable=True),
        sa.Column("best_ms", sa.Float(), nullable=True),
        sa.Column("steadiness", sa.Float(), nullable=True),
        sa.Column("sync_score", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("drill_id", "runner_id"),
    )
    with op.batch_alter_table("drill_results", schema=None) as batch_op:
        batch_op.create_index("ix_drill_results_runner", ["runner_id", "finished_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("drill_results", schema=None) as batch_op:
        batch_op.drop_index("ix_drill_results_runner")
    op.drop_table("drill_results")
    op.drop_table("drills")
