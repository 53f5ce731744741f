"""clubs and club members

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 12:14:39.784020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "club_members",
        sa.Column("club_id", sa.String(length=36), nullable=False),
        sa.Column("runner_id", sa.String(length=36), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("invited", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("club_id", "runner_id"),
    )
    with op.batch_alter_table("club_members", schema=None) as batch_op:
        batch_op.create_index("ix_club_members_runner", ["runner_id"], unique=False)

    op.create_table(
        "clubs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("join_code", sa.String(length=32), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:

    op.drop_table("clubs")
    with op.batch_alter_table("club_members", schema=None) as batch_op:
        batch_op.drop_index("ix_club_members_runner")

    op.drop_table("club_members")
