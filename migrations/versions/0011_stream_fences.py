"""stream fences: the highest lease token that appended to a room-owned stream

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 14:40:00.000000

Chained after the privacy migration (0010), the newest revision when this was written. If
another 0011 lands first, rename this one and set `down_revision` to that revision's id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_fences",
        sa.Column("stream_id", sa.String(length=200), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("stream_id"),
    )


def downgrade() -> None:
    op.drop_table("stream_fences")
