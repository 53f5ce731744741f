"""Privacy settings storage: activity visibility and privacy zones (rules in `game.privacy`).

Settings are account data, not events: deleting the account deletes them. A runner without a
settings row has the default visibility, `everyone` (activity list only: tracks are never
public), and no zones.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from game.privacy import Visibility, Zone, check_zones
from server.store.club_projection import CLUB_MEMBERS
from server.store.db import writer
from server.store.tables import PrivacySetting, PrivacyZone

SETTINGS = PrivacySetting.__table__  # type: ignore[attr-defined]
ZONES = PrivacyZone.__table__  # type: ignore[attr-defined]
DEFAULT_VISIBILITY = Visibility.EVERYONE


@dataclass(frozen=True, slots=True)
class LabelledZone:
    zone: Zone
    label: str


@dataclass(frozen=True, slots=True)
class Privacy:
    activity_visibility: Visibility
    zones: tuple[LabelledZone, ...]


async def load(engine: AsyncEngine, runner_id: str) -> Privacy:
    """A runner's privacy settings (defaults when none are stored)."""
    async with engine.connect() as conn:
        vis = (
            await conn.execute(
                select(SETTINGS.c.activity_visibility).where(SETTINGS.c.runner_id == runner_id)
            )
        ).scalar_one_or_none()
        rows = (
            await conn.execute(
                select(ZONES).where(ZONES.c.runner_id == runner_id).order_by(ZONES.c.position)
            )
        ).all()
    zones = tuple(LabelledZone(Zone(r.lat, r.lon, r.radius_m), r.label) for r in rows)
    return Privacy(Visibility(vis) if vis is not None else DEFAULT_VISIBILITY, zones)


async def save(engine: AsyncEngine, runner_id: str, privacy: Privacy) -> None:
    """Replace a runner's settings and zones, in one transaction."""
    check_zones([z.zone for z in privacy.zones])
    async with engine.connect() as raw:
        conn = await writer(raw)
        async with conn.begin():
            await erase_for(conn, runner_id)
            await conn.execute(
                insert(SETTINGS).values(
                    runner_id=runner_id,
                    activity_visibility=privacy.activity_visibility.value,
                    updated_at=datetime.now(UTC),
                )
            )
            if privacy.zones:
                await conn.execute(
                    insert(ZONES),
                    [
                        {
                            "id": uuid.uuid4().hex,
                            "runner_id": runner_id,
                            "position": i,
                            "lat": z.zone.lat,
                            "lon": z.zone.lon,
                            "radius_m": z.zone.radius_m,
                            "label": z.label,
                        }
                        for i, z in enumerate(privacy.zones)
                    ],
                )


async def shares_club(engine: AsyncEngine, a: str, b: str) -> bool:
    """Whether two runners are both (non-invited) members of some club."""
    mine = select(CLUB_MEMBERS.c.club_id).where(
        CLUB_MEMBERS.c.runner_id == a, CLUB_MEMBERS.c.invited.is_(False)
    )
    stmt = (
        select(CLUB_MEMBERS.c.club_id)
        .where(
            CLUB_MEMBERS.c.runner_id == b,
            CLUB_MEMBERS.c.invited.is_(False),
            CLUB_MEMBERS.c.club_id.in_(mine),
        )
        .limit(1)
    )
    async with engine.connect() as conn:
        return (await conn.execute(stmt)).first() is not None


async def erase_for(conn: AsyncConnection, runner_id: str) -> None:
    """Account deletion (and `save`): the runner's settings and every zone go."""
    await conn.execute(delete(ZONES).where(ZONES.c.runner_id == runner_id))
    await conn.execute(delete(SETTINGS).where(SETTINGS.c.runner_id == runner_id))
