"""Your profile: XP, level, badges and streaks, computed from your credited runs, podiums and
finished drills."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from game.rewards import CreditedRun, DrillResult, Podium, compute_profile
from server.deps import CurrentRunner, EngineDep, WriteSessionDep
from server.errors import ApiError
from server.store.drill_projection import DRILL_RESULTS
from server.store.progress import CHALLENGES, RUNS
from server.store.race_projection import RACES
from server.store.tables import Runner

router = APIRouter(tags=["accounts"])


class BadgeOut(BaseModel):
    code: str
    name: str
    description: str
    earned_at: datetime


class ProfileOut(BaseModel):
    runner_id: str
    handle: str
    tz: str
    xp: int
    level: int
    xp_into_level: int
    xp_for_next_level: int = Field(description="XP the current level spans")
    total_distance_m: float
    total_runs: int
    day_streak: int
    best_day_streak: int
    week_streak: int
    best_week_streak: int
    badges: list[BadgeOut]


class MeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tz: str = Field(
        max_length=64,
        description="IANA time zone for day and week streaks",
        examples=["Europe/Berlin"],
    )


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@router.get("/me/profile", response_model=ProfileOut)
async def my_profile(runner: CurrentRunner, engine: EngineDep) -> ProfileOut:
    """XP (backward effort weighted), level, badges, and day and week streaks in your time zone."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(RUNS).where(RUNS.c.runner_id == runner.id, RUNS.c.status == "verified")
            )
        ).all()
        closed = (
            await conn.execute(
                select(CHALLENGES.c.id, CHALLENGES.c.closed_at, CHALLENGES.c.standings).where(
                    CHALLENGES.c.status == "closed"
                )
            )
        ).all()
        finished = (
            await conn.execute(
                select(RACES.c.id, RACES.c.start_at, RACES.c.results).where(
                    RACES.c.status == "finished"
                )
            )
        ).all()
        drilled = (
            await conn.execute(select(DRILL_RESULTS).where(DRILL_RESULTS.c.runner_id == runner.id))
        ).all()
    runs = [
        CreditedRun(
            run_id=r.id,
            ended_at=_when(r.credited_ended_at or r.ended_at),
            distance_m=r.credited_distance_m,
            elapsed_s=r.credited_elapsed_s,
            activity=r.activity,
            clean=bool(r.clean),
        )
        for r in rows
    ]
    podiums = [
        Podium(f"challenge:{c.id}", s["rank"], _when(c.closed_at))
        for c in closed
        for s in (c.standings or [])
        if s["runner_id"] == runner.id and s["rank"] <= 3
    ] + [
        Podium(f"race:{r.id}", res["place"], _when(r.start_at + (res["time_s"] or 0)))
        for r in finished
        for res in (r.results or [])
        if res["runner_id"] == runner.id and res["place"] is not None and res["place"] <= 3
    ]
    drills = [
        DrillResult(d.drill_id, _when(d.finished_at), d.median_ms, d.sync_score) for d in drilled
    ]
    profile = compute_profile(runs, podiums, drills, ZoneInfo(runner.tz), datetime.now(UTC))
    return ProfileOut(
        runner_id=runner.id,
        handle=runner.handle,
        tz=runner.tz,
        xp=profile.xp,
        level=profile.level,
        xp_into_level=profile.xp_into_level,
        xp_for_next_level=profile.xp_for_next_level,
        total_distance_m=round(profile.total_distance_m, 1),
        total_runs=profile.total_runs,
        day_streak=profile.day_streak,
        best_day_streak=profile.best_day_streak,
        week_streak=profile.week_streak,
        best_week_streak=profile.best_week_streak,
        badges=[
            BadgeOut(code=b.code, name=b.name, description=b.description, earned_at=b.earned_at)
            for b in profile.badges
        ],
    )


@router.patch("/me", response_model=dict[str, str])
async def update_me(
    body: MeUpdate, runner: CurrentRunner, session: WriteSessionDep
) -> dict[str, str]:
    """Set your time zone (streaks count local days and ISO weeks)."""
    try:
        ZoneInfo(body.tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ApiError(422, "invalid", f"tz: unknown time zone {body.tz!r}") from exc
    row = await session.get(Runner, runner.id)
    assert row is not None
    row.tz = body.tz
    session.add(row)
    await session.commit()
    return {"tz": body.tz}
