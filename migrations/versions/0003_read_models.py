"""read models: challenges, members, progress, runs, run tracks; runner time zone

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 11:55:28.825140
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "challenge_members",
        sa.Column("challenge_id", sa.String(length=100), nullable=False),
        sa.Column("runner_id", sa.String(length=36), nullable=False),
        sa.Column("joined_at", sa.Float(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("challenge_id", "runner_id"),
    )
    with op.batch_alter_table("challenge_members", schema=None) as batch_op:
        batch_op.create_index("ix_challenge_members_runner", ["runner_id"], unique=False)

    op.create_table(
        "challenge_progress",
        sa.Column("challenge_id", sa.String(length=100), nullable=False),
        sa.Column("runner_id", sa.String(length=36), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("reached_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("challenge_id", "runner_id"),
    )
    op.create_table(
        "challenges",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("target_value", sa.Float(), nullable=False),
        sa.Column("distance_m", sa.Float(), nullable=True),
        sa.Column("starts_at", sa.Float(), nullable=False),
        sa.Column("ends_at", sa.Float(), nullable=False),
        sa.Column("tz", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("club_id", sa.String(length=100), nullable=True),
        sa.Column("team_mode", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("template", sa.String(length=50), nullable=True),
        sa.Column("created_by", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.Column(
            "standings",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("challenges", schema=None) as batch_op:
        batch_op.create_index("ix_challenges_window", ["ends_at", "starts_at"], unique=False)

    op.create_table(
        "run_tracks",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("runner_id", sa.String(length=36), nullable=False),
        sa.Column("fix_count", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=True),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )
    with op.batch_alter_table("run_tracks", schema=None) as batch_op:
        batch_op.create_index("ix_run_tracks_recorded", ["recorded_at"], unique=False)

    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("runner_id", sa.String(length=36), nullable=False),
        sa.Column("activity", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=False),
        sa.Column("distance_m", sa.Float(), nullable=False),
        sa.Column("elapsed_s", sa.Float(), nullable=False),
        sa.Column("moving_s", sa.Float(), nullable=False),
        sa.Column("credited_distance_m", sa.Float(), nullable=False),
        sa.Column("credited_elapsed_s", sa.Float(), nullable=False),
        sa.Column("credited_ended_at", sa.Float(), nullable=True),
        sa.Column(
            "best_efforts_s",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column(
            "flags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("clean", sa.Boolean(), nullable=False),
        sa.Column("fix_count", sa.Integer(), nullable=False),
        sa.Column("appealed", sa.Boolean(), nullable=False),
        sa.Column("recorded_position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_runner_ended", ["runner_id", "ended_at"], unique=False)
        batch_op.create_index("ix_runs_status_score", ["status", "score"], unique=False)

    with op.batch_alter_table("runners", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tz", sa.String(length=64), server_default="UTC", nullable=False)
        )


def downgrade() -> None:

    with op.batch_alter_table("runners", schema=None) as batch_op:
        batch_op.drop_column("tz")

    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_status_score")
        batch_op.drop_index("ix_runs_runner_ended")

    op.drop_table("runs")
    with op.batch_alter_table("run_tracks", schema=None) as batch_op:
        batch_op.drop_index("ix_run_tracks_recorded")

    op.drop_table("run_tracks")
    with op.batch_alter_table("challenges", schema=None) as batch_op:
        batch_op.drop_index("ix_challenges_window")

    op.drop_table("challenges")
    op.drop_table("challenge_progress")
    with op.batch_alter_table("challenge_members", schema=None) as batch_op:
        batch_op.drop_index("ix_challenge_members_runner")

    op.drop_table("challenge_members")
