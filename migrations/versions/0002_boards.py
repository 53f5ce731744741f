"""leaderboards: board_entries, one score per runner per board, indexed in board order

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "board_entries",
        sa.Column("board", sa.String(length=200), nullable=False),
        sa.Column(
            "runner_id",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("order_key", sa.Float(), nullable=False),
        sa.Column("reached_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("board", "runner_id"),
    )
    with op.batch_alter_table("board_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_board_entries_order",
            ["board", "order_key", "reached_at", "runner_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("board_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_board_entries_order")
    op.drop_table("board_entries")
