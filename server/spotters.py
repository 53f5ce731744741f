"""Spotter pairings and share links: storage helpers used by the API and the room socket.

A spotter follows a runner live and is alerted when they stop suddenly (`game.safety`). Two
ways in: a paired account (the runner invites it by handle; it accepts), or a share link for
someone without an account: a random token, of which only the SHA-256 is stored, revocable by
the runner. In a room a share-link spotter is the pseudonymous identity `link-<link id>`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from game import races
from server.commands import load_state
from server.store.event_store import EventStore
from server.store.race_projection import RACES
from server.store.tables import SpotterLink, SpotterPairing

PAIRINGS = SpotterPairing.__table__  # type: ignore[attr-defined]
LINKS = SpotterLink.__table__  # type: ignore[attr-defined]
#: Room identity prefix of a share-link spotter.
LINK_PREFIX = "link-"
#: Races a share link may follow: upcoming and live.
FOLLOWABLE = ("scheduled", "countdown", "running", "paused")
#: At most this many upcoming or live races are searched for the runner's races.
MAX_RACES_SCANNED = 500


def new_token() -> str:
    """A share-link token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LinkGrant:
    """What a valid share link may follow."""

    link_id: str
    runner_id: str

    @property
    def identity(self) -> str:
        return LINK_PREFIX + self.link_id


async def resolve_link(engine: AsyncEngine, token: str, now: datetime) -> LinkGrant | None:
    """The link of `token`, or None when it is unknown, revoked or expired."""
    if not token or len(token) > 200:
        return None
    stmt = select(LINKS.c.id, LINKS.c.runner_id, LINKS.c.expires_at, LINKS.c.revoked_at).where(
        LINKS.c.token_hash == token_hash(token)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(stmt)).first()
    if row is None or row.revoked_at is not None:
        return None
    expires = _aware(row.expires_at, now)
    if expires <= now:
        return None
    return LinkGrant(row.id, row.runner_id)


def _aware(value: datetime, like: datetime) -> datetime:
    """SQLite reads timestamps back naive (UTC); compare them as aware ones."""
    return value if value.tzinfo is not None else value.replace(tzinfo=like.tzinfo)


async def spotted_by(engine: AsyncEngine, spotter_id: str) -> tuple[str, ...]:
    """The runners whose accepted spotter `spotter_id` is."""
    stmt = select(PAIRINGS.c.runner_id).where(
        PAIRINGS.c.spotter_id == spotter_id, PAIRINGS.c.status == "accepted"
    )
    async with engine.connect() as conn:
        return tuple(sorted(r for (r,) in (await conn.execute(stmt)).all()))


async def followable_races(
    engine: AsyncEngine, store: EventStore, runner_id: str, now: float
) -> list[dict[str, Any]]:
    """The upcoming and live races `runner_id` is registered in, soonest first."""
    stmt = (
        select(RACES.c.id)
        .where(RACES.c.status.in_(FOLLOWABLE), RACES.c.registered > 0)
        .order_by(RACES.c.scheduled_at, RACES.c.id)
        .limit(MAX_RACES_SCANNED)
    )
    async with engine.connect() as conn:
        ids = [r for (r,) in (await conn.execute(stmt)).all()]
    out = []
    for race_id in ids:
        state, _ = await load_state(store, f"race-{race_id}", races)
        st: races.RaceState = state
        status = races.status_at(st, now)
        if runner_id in st.registered and status.value in FOLLOWABLE:
            out.append(
                {
                    "id": st.race_id,
                    "title": st.title,
                    "status": status.value,
                    "scheduled_at": st.scheduled_at,
                    "start_at": st.start_at,
                    "room": f"/ws/rooms/{st.race_id}",
                }
            )
    return out


async def erase_for(conn: AsyncConnection, runner_id: str) -> None:
    """Account deletion: every pairing and share link of the runner goes."""
    await conn.execute(
        delete(PAIRINGS).where(
            or_(PAIRINGS.c.runner_id == runner_id, PAIRINGS.c.spotter_id == runner_id)
        )
    )
    await conn.execute(delete(LINKS).where(LINKS.c.runner_id == runner_id))
