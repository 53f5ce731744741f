"""Privacy: who sees your activities, your privacy zones, and other runners' activity lists.

A GPS track is personal data. Only its runner and moderators see it whole; club-mates may get a
shared view (`GET /api/v1/runs/{id}/track?shared=true`) with every fix inside the runner's
privacy zones removed, when the runner's visibility allows (`everyone` or `club`). Everyone
else sees at most distance, time, status and date, and only when the runner shows them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from game.privacy import MAX_RADIUS_M, MAX_ZONES, MIN_RADIUS_M, Visibility, Zone
from game.privacy import may_see_activities as may_see
from server import privacy as store
from server.deps import CurrentRunner, EngineDep
from server.errors import ApiError, problem_responses
from server.store.progress import RUNS
from server.store.tables import Runner

router = APIRouter(tags=["privacy"])
RUNNERS = Runner.__table__  # type: ignore[attr-defined]
RunnerId = Annotated[str, Path(max_length=36, pattern=r"^[A-Za-z0-9_-]+$")]
STAFF = ("moderator", "admin")


class ZoneIO(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    lat: float = Field(ge=-90, le=90, examples=[52.52])
    lon: float = Field(ge=-180, le=180, examples=[13.405])
    radius_m: float = Field(ge=MIN_RADIUS_M, le=MAX_RADIUS_M, examples=[300])
    label: str = Field(default="", max_length=60, examples=["home"])


class PrivacyIO(BaseModel):
    model_config = ConfigDict(extra="forbid")

    activity_visibility: Visibility = Field(
        default=Visibility.EVERYONE,
        description="who sees your activity list (distance, time, status, date): everyone "
        "signed in, members of a club you share, or nobody. Tracks are never public: "
        "club-mates get a zone-masked view unless this is `nobody`.",
    )
    zones: list[ZoneIO] = Field(
        default_factory=list,
        max_length=MAX_ZONES,
        description=f"up to {MAX_ZONES} privacy zones, cut from every shared view of a track",
    )


class RunSummary(BaseModel):
    id: str
    status: Literal["verified", "review", "rejected"]
    distance_m: float
    duration_s: float = Field(description="elapsed (gun) time")
    date: datetime | None = Field(description="when the run ended")


def _io(p: store.Privacy) -> PrivacyIO:
    return PrivacyIO(
        activity_visibility=p.activity_visibility,
        zones=[
            ZoneIO(lat=z.zone.lat, lon=z.zone.lon, radius_m=z.zone.radius_m, label=z.label)
            for z in p.zones
        ],
    )


@router.get("/me/privacy", response_model=PrivacyIO)
async def get_privacy(runner: CurrentRunner, engine: EngineDep) -> PrivacyIO:
    """Your activity visibility and privacy zones."""
    return _io(await store.load(engine, runner.id))


@router.put("/me/privacy", response_model=PrivacyIO)
async def put_privacy(body: PrivacyIO, runner: CurrentRunner, engine: EngineDep) -> PrivacyIO:
    """Replace your activity visibility and privacy zones (send the whole list)."""
    privacy = store.Privacy(
        body.activity_visibility,
        tuple(
            store.LabelledZone(Zone(z.lat, z.lon, z.radius_m), z.label.strip()) for z in body.zones
        ),
    )
    await store.save(engine, runner.id, privacy)
    return _io(privacy)


async def viewer_may_see(engine: EngineDep, owner_id: str, viewer: Runner) -> bool:
    """Whether `viewer` sees `owner_id`'s activity list."""
    if viewer.id == owner_id or viewer.role in STAFF:
        return True
    vis = (await store.load(engine, owner_id)).activity_visibility
    shares = vis is Visibility.CLUB and await store.shares_club(engine, owner_id, viewer.id)
    return may_see(vis, is_owner=False, is_moderator=False, shares_club=shares)


@router.get(
    "/runners/{runner_id}/runs",
    response_model=list[RunSummary],
    responses=problem_responses(404),
)
async def runner_runs(
    runner_id: RunnerId,
    runner: CurrentRunner,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> list[RunSummary]:
    """Another runner's runs, newest first: distance, time, status and date only.

    Shown as the runner chose: to everyone signed in, to members of a club you share, or to
    nobody (moderators always). Otherwise, and for unknown runners, 404.
    """
    async with engine.connect() as conn:
        known = (
            await conn.execute(select(RUNNERS.c.id).where(RUNNERS.c.id == runner_id))
        ).scalar_one_or_none()
    if known is None or not await viewer_may_see(engine, runner_id, runner):
        raise ApiError(404, "not_found", f"no runner {runner_id!r}")
    stmt = (
        select(RUNS.c.id, RUNS.c.status, RUNS.c.distance_m, RUNS.c.elapsed_s, RUNS.c.ended_at)
        .where(RUNS.c.runner_id == runner_id)
        .order_by(RUNS.c.ended_at.desc(), RUNS.c.id)
        .limit(limit)
        .offset(offset)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        RunSummary(
            id=r.id,
            status=r.status,
            distance_m=r.distance_m,
            duration_s=r.elapsed_s,
            date=datetime.fromtimestamp(r.ended_at, UTC) if r.ended_at else None,
        )
        for r in rows
    ]
