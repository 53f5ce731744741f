"""Challenges: list, create, join, leave, progress, and this week's challenge."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from game import challenges as ch
from server.authz import require_organiser
from server.commands import execute
from server.deps import BoardsDep, CurrentRunner, EngineDep, EventStoreDep, ProjectionsDep
from server.errors import ApiError
from server.store.progress import CHALLENGES, PROGRESS, challenge_board

router = APIRouter(prefix="/challenges", tags=["challenges"])


class ChallengeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=3, max_length=80, examples=["Reverse 10 · week 48"])
    kind: ch.Kind = Field(examples=["distance"])
    target_value: float = Field(
        default=0.0,
        ge=0,
        description="metres (distance), seconds (time), runs (sessions) or drills (drills)",
        examples=[10000],
    )
    distance_m: float | None = Field(
        default=None,
        description=(
            "best_time only: a standard distance in metres "
            "(100, 200, 400, 800, 1609.344, 5000, 10000, 21097.5, 42195)"
        ),
    )
    starts_at: AwareDatetime = Field(examples=["2026-11-23T00:00:00+01:00"])
    ends_at: AwareDatetime = Field(examples=["2026-11-30T00:00:00+01:00"])
    tz: str = Field(default="UTC", max_length=64, examples=["Europe/Berlin"])
    description: str = Field(default="", max_length=500)
    team_mode: bool = False
    club_id: str | None = Field(default=None, max_length=36, description="a club challenge")


class ChallengePublic(BaseModel):
    id: str
    title: str
    kind: str
    target_value: float
    distance_m: float | None
    starts_at: datetime
    ends_at: datetime
    tz: str
    scope: str
    club_id: str | None
    team_mode: bool
    description: str
    template: str | None
    status: Literal["upcoming", "open", "ended", "closed"]
    members: int
    standings: list[dict[str, Any]] | None = None


class Progress(BaseModel):
    challenge_id: str
    runner_id: str
    joined: bool
    value: float | None = Field(description="metres, seconds, runs or drills; best_time: seconds")
    target_value: float
    percent: float
    runs: int
    completed: bool
    rank: int | None
    of: int


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _public(row: Any, now: float) -> ChallengePublic:
    if row.status == "closed":
        state = "closed"
    elif now < row.starts_at:
        state = "upcoming"
    elif now >= row.ends_at:
        state = "ended"
    else:
        state = "open"
    return ChallengePublic(
        id=row.id,
        title=row.title,
        kind=row.kind,
        target_value=row.target_value,
        distance_m=row.distance_m,
        starts_at=_ts(row.starts_at),
        ends_at=_ts(row.ends_at),
        tz=row.tz,
        scope=row.scope,
        club_id=row.club_id,
        team_mode=row.team_mode,
        description=row.description,
        template=row.template,
        status=state,
        members=row.members,
        standings=row.standings,
    )


async def _row(engine: EngineDep, challenge_id: str) -> Any:
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(CHALLENGES).where(CHALLENGES.c.id == challenge_id))
        ).first()
    if row is None:
        raise ApiError(404, "not_found", f"no challenge {challenge_id!r}")
    return row


@router.get("", response_model=list[ChallengePublic])
async def list_challenges(
    engine: EngineDep,
    state: Annotated[Literal["current", "all", "closed"], Query()] = "current",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> list[ChallengePublic]:
    """Challenges, newest first. `current`: open or upcoming; `closed`: finished."""
    now = datetime.now(UTC).timestamp()
    stmt = select(CHALLENGES).order_by(CHALLENGES.c.starts_at.desc(), CHALLENGES.c.id)
    if state == "current":
        stmt = stmt.where(CHALLENGES.c.ends_at > now, CHALLENGES.c.status == "open")
    elif state == "closed":
        stmt = stmt.where((CHALLENGES.c.status == "closed") | (CHALLENGES.c.ends_at <= now))
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt.limit(limit).offset(offset))).all()
    return [_public(r, now) for r in rows]


@router.get("/current", response_model=ChallengePublic)
async def current_weekly(engine: EngineDep) -> ChallengePublic:
    """This week's official challenge (the weekly rotation)."""
    now = datetime.now(UTC)
    stmt = (
        select(CHALLENGES)
        .where(
            CHALLENGES.c.template.is_not(None),
            CHALLENGES.c.starts_at <= now.timestamp(),
            CHALLENGES.c.ends_at > now.timestamp(),
        )
        .order_by(CHALLENGES.c.starts_at.desc())
        .limit(1)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(stmt)).first()
    if row is None:
        raise ApiError(404, "not_found", "this week's challenge is not open yet")
    return _public(row, now.timestamp())


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ChallengePublic)
async def create_challenge(
    body: ChallengeCreate,
    runner: CurrentRunner,
    store: EventStoreDep,
    engine: EngineDep,
    projections: ProjectionsDep,
) -> ChallengePublic:
    """Create an official challenge (moderators) or a club challenge (its owner and admins)."""
    await require_organiser(store, runner, body.club_id)
    cid = uuid.uuid4().hex[:12]
    cmd = ch.CreateChallenge(
        challenge_id=cid,
        title=body.title,
        kind=body.kind,
        target_value=body.target_value,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        tz=body.tz,
        created_by=runner.id,
        team_mode=body.team_mode,
        description=body.description,
        distance_m=body.distance_m,
        scope=ch.Scope.CLUB if body.club_id else ch.Scope.OFFICIAL,
        club_id=body.club_id,
    )
    await execute(store, f"challenge-{cid}", ch, cmd, meta={"actor": runner.id})
    await projections.run_once()
    return _public(await _row(engine, cid), datetime.now(UTC).timestamp())


@router.get("/{challenge_id}", response_model=ChallengePublic)
async def get_challenge(challenge_id: str, engine: EngineDep) -> ChallengePublic:
    """One challenge, with final standings once closed."""
    return _public(await _row(engine, challenge_id), datetime.now(UTC).timestamp())


@router.post("/{challenge_id}/join", response_model=Progress)
async def join(
    challenge_id: str,
    runner: CurrentRunner,
    store: EventStoreDep,
    engine: EngineDep,
    boards: BoardsDep,
    projections: ProjectionsDep,
) -> Progress:
    """Join a challenge. Credited runs in its window count, including ones before joining."""
    await _row(engine, challenge_id)
    await execute(
        store,
        f"challenge-{challenge_id}",
        ch,
        ch.JoinChallenge(runner.id),
        meta={"actor": runner.id},
    )
    await projections.run_once()
    return await _progress(engine, boards, challenge_id, runner.id)


@router.post("/{challenge_id}/leave", status_code=status.HTTP_204_NO_CONTENT)
async def leave(
    challenge_id: str,
    runner: CurrentRunner,
    store: EventStoreDep,
    engine: EngineDep,
    projections: ProjectionsDep,
) -> None:
    """Leave a challenge; your progress leaves its leaderboard."""
    await _row(engine, challenge_id)
    await execute(
        store,
        f"challenge-{challenge_id}",
        ch,
        ch.LeaveChallenge(runner.id),
        meta={"actor": runner.id},
    )
    await projections.run_once()


@router.get("/{challenge_id}/progress", response_model=Progress)
async def progress(
    challenge_id: str, runner: CurrentRunner, engine: EngineDep, boards: BoardsDep
) -> Progress:
    """Your progress and rank in a challenge."""
    return await _progress(engine, boards, challenge_id, runner.id)


async def _progress(
    engine: EngineDep, boards: BoardsDep, challenge_id: str, runner_id: str
) -> Progress:
    c = await _row(engine, challenge_id)
    async with engine.connect() as conn:
        p = (
            await conn.execute(
                select(PROGRESS).where(
                    PROGRESS.c.challenge_id == challenge_id, PROGRESS.c.runner_id == runner_id
                )
            )
        ).first()
        of = (
            await conn.execute(
                select(func.count())
                .select_from(PROGRESS)
                .where(PROGRESS.c.challenge_id == challenge_id)
            )
        ).scalar_one()
    entry = await boards.rank(challenge_board(challenge_id), runner_id)
    value = p.value if p is not None else None
    if c.kind == ch.Kind.BEST_TIME:
        percent = 100.0 if value is not None else 0.0
    else:
        percent = min(100.0, 100.0 * (value or 0.0) / c.target_value) if c.target_value else 0.0
    return Progress(
        challenge_id=challenge_id,
        runner_id=runner_id,
        joined=p is not None,
        value=value,
        target_value=c.distance_m if c.kind == ch.Kind.BEST_TIME else c.target_value,
        percent=round(percent, 1),
        runs=p.runs if p is not None else 0,
        completed=bool(p.completed) if p is not None else False,
        rank=entry.rank if entry else None,
        of=int(of),
    )
