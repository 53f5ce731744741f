"""club invites: who sent a pending club invitation, and when

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 10:20:00.000000

Chained after the stream fences migration (0011), the newest revision when this was written. If
another 0012 lands first, rename this one and set `down_revision` to that revision's id.

Pending invitations already in `club_members` get `invited_by` from their `ClubMemberInvited`
event, as a rebuild of the club projection would set them (`invited_at` stays empty: events
logged before this revision carry no time).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_events = sa.table(
    "events",
    sa.column("position", sa.BigInteger()),
    sa.column("type", sa.String()),
    sa.column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
)
_members = sa.table(
    "club_members",
    sa.column("club_id", sa.String()),
    sa.column("runner_id", sa.String()),
    sa.column("invited", sa.Boolean()),
    sa.column("invited_by", sa.String()),
    sa.column("invited_at", sa.Float()),
)


def upgrade() -> None:
    with op.batch_alter_table("club_members", schema=None) as batch_op:
        batch_op.add_column(sa.Column("invited_by", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("invited_at", sa.Float(), nullable=True))

    conn = op.get_bind()
    invites = conn.execute(
        sa.select(_events.c.data)
        .where(_events.c.type == "ClubMemberInvited")
        .order_by(_events.c.position)
    )
    for (data,) in invites:  # in log order: the latest invitation of a pair wins
        conn.execute(
            sa.update(_members)
            .where(
                _members.c.club_id == data["club_id"],
                _members.c.runner_id == data["runner_id"],
                _members.c.invited.is_(True),
            )
            .values(invited_by=data["by"], invited_at=data.get("at"))
        )


def downgrade() -> None:
    with op.batch_alter_table("club_members", schema=None) as batch_op:
        batch_op.drop_column("invited_at")
        batch_op.drop_column("invited_by")
