"""Your data: export everything, or delete your account (personal data erased, results kept)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.deps import CurrentRunner, EngineDep, EventStoreDep
from server.errors import ApiError
from server.privacy import erase_for as erase_privacy
from server.privacy import load as load_privacy
from server.security import verify_password
from server.shred import decrypt_for, shred
from server.spotters import erase_for as erase_spotters
from server.store.club_projection import CLUB_MEMBERS
from server.store.db import writer
from server.store.progress import MEMBERS, RUNS
from server.store.read_models import RaceFixChunkRow, RunTrackRow
from server.store.tables import Runner
from server.tracks import decode_track

router = APIRouter(tags=["accounts"])
TRACKS = RunTrackRow.__table__  # type: ignore[attr-defined]
CHUNKS = RaceFixChunkRow.__table__  # type: ignore[attr-defined]
RUNNERS = Runner.__table__  # type: ignore[attr-defined]


class DeleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=1, max_length=128, description="confirm with your password")


def _points(blob: bytes) -> list[dict[str, Any]]:
    track = decode_track(blob)
    return [{"t": f.t, "lat": f.lat, "lon": f.lon, "acc": f.acc_m} for f in track.fixes()]


@router.get("/me/export")
async def export(runner: CurrentRunner, engine: EngineDep, store: EventStoreDep) -> dict[str, Any]:
    """Everything RetroRun holds about you, as JSON: account, runs with tracks, memberships,
    privacy settings."""
    async with engine.connect() as conn:
        runs = (await conn.execute(select(RUNS).where(RUNS.c.runner_id == runner.id))).all()
        tracks = {
            r.run_id: r.data
            for r in await conn.execute(select(TRACKS).where(TRACKS.c.runner_id == runner.id))
        }
        challenges = (
            await conn.execute(select(MEMBERS).where(MEMBERS.c.runner_id == runner.id))
        ).all()
        clubs = (
            await conn.execute(select(CLUB_MEMBERS).where(CLUB_MEMBERS.c.runner_id == runner.id))
        ).all()
    run_docs = []
    for r in runs:
        doc = dict(r._mapping)
        blob = tracks.get(r.id)
        doc["points"] = await asyncio.to_thread(_points, blob) if blob else []
        events = await store.load(f"run-{r.id}")
        doc["appeals"] = [
            await decrypt_for(engine, runner.id, e.data["message"])
            for e in events
            if e.type == "RunAppealed"
        ]
        run_docs.append(doc)
    privacy = await load_privacy(engine, runner.id)
    return {
        "exported_at": datetime.now(UTC).isoformat(),
        "account": {
            "id": runner.id,
            "handle": runner.handle,
            "role": runner.role,
            "tz": runner.tz,
            "created_at": runner.created_at.isoformat(),
        },
        "runs": run_docs,
        "challenges": [dict(c._mapping) for c in challenges],
        "clubs": [dict(c._mapping) for c in clubs],
        "privacy": {
            "activity_visibility": privacy.activity_visibility.value,
            "zones": [
                {
                    "lat": z.zone.lat,
                    "lon": z.zone.lon,
                    "radius_m": z.zone.radius_m,
                    "label": z.label,
                }
                for z in privacy.zones
            ],
        },
    }


async def erase(engine: AsyncEngine, runner_id: str) -> None:
    """Erase a runner's personal data: account row, tracks, live fixes, spotter pairings and
    share links, privacy settings and zones, and their data key.

    What stays: the pseudonymous runner id in events and on boards (results stay consistent for
    everyone else), and encrypted text nobody can decrypt any more.
    """
    await shred(engine, runner_id)
    async with engine.connect() as raw:
        conn = await writer(raw)
        async with conn.begin():
            await conn.execute(delete(TRACKS).where(TRACKS.c.runner_id == runner_id))
            await conn.execute(delete(CHUNKS).where(CHUNKS.c.runner_id == runner_id))
            await conn.execute(delete(RUNNERS).where(RUNNERS.c.id == runner_id))
            await erase_spotters(conn, runner_id)
            await erase_privacy(conn, runner_id)


@router.delete("/me", status_code=status.HTTP_204_NO_CONTENT)
async def delete_account(body: DeleteIn, runner: CurrentRunner, engine: EngineDep) -> None:
    """Delete your account. Your handle, tracks and written text are erased for good; your
    results stay on past boards under an anonymous id."""
    if not await asyncio.to_thread(verify_password, runner.password_hash, body.password):
        raise ApiError(403, "invalid_credentials", "the password does not match")
    await erase(engine, runner.id)
