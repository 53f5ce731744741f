"""Races: schedule, register, read, results. The live part is the room at /ws/rooms/{id}."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select

from game import course as course_rules
from game import races as race_decider
from server.authz import club_state, require_organiser
from server.commands import execute, load_state
from server.deps import CurrentRunner, EngineDep, EventStoreDep, ProjectionsDep
from server.errors import ApiError
from server.store.race_projection import RACES

router = APIRouter(prefix="/races", tags=["races"])
RaceId = Annotated[str, Path(max_length=36, pattern=r"^[A-Za-z0-9_-]+$")]


#: How far in the past a race may be scheduled (one set up at the last minute, a little late).
SCHEDULE_GRACE = timedelta(hours=1)


class CourseIn(BaseModel):
    """A course to follow: progress is the distance along `line` reached within `tolerance_m`
    of it; the finish is `distance_m` along it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    line: list[tuple[float, float]] = Field(
        min_length=2,
        max_length=course_rules.MAX_POINTS,
        description="the course as [lat, lon] points in degrees, in running order",
        examples=[[[52.5200, 13.4050], [52.5245, 13.4050]]],
    )
    tolerance_m: float = Field(
        default=course_rules.DEFAULT_TOLERANCE_M,
        ge=course_rules.MIN_TOLERANCE_M,
        le=course_rules.MAX_TOLERANCE_M,
        description="how far from the line a runner may be, in metres",
    )


class RaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    title: str = Field(min_length=3, max_length=80, examples=["Saturday Reverse 5k"])
    distance_m: float = Field(ge=50, le=42_195, examples=[5000])
    scheduled_at: AwareDatetime = Field(examples=["2026-11-28T09:00:00+01:00"])
    capacity: int = Field(default=100, ge=1, le=5000)
    open: bool = Field(default=True, description="false: only the club's members may register")
    club_id: str | None = Field(default=None, max_length=36, description="a club race")
    course: CourseIn | None = Field(default=None, description="none: a free route")
    cutoff_s: float | None = Field(
        default=None,
        ge=race_decider.MIN_CUTOFF_S,
        le=race_decider.MAX_CUTOFF_S,
        description="seconds from the gun (pauses excluded) after which the race closes and the "
        "runners still out are DNF; default: an hour plus 1.2 s a metre",
    )
    auto_start: bool = Field(
        default=False,
        description="the countdown starts by itself, so that the gun fires at scheduled_at "
        "(else the organiser or a moderator starts it from the room)",
    )


class RaceEdit(BaseModel):
    """The fields to change; the others stay. The course, distance and club are fixed once
    scheduled (runners registered for them)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    title: str | None = Field(default=None, min_length=3, max_length=80)
    scheduled_at: AwareDatetime | None = None
    capacity: int | None = Field(default=None, ge=1, le=5000)
    cutoff_s: float | None = Field(
        default=None, ge=race_decider.MIN_CUTOFF_S, le=race_decider.MAX_CUTOFF_S
    )
    auto_start: bool | None = None


class CoursePublic(BaseModel):
    line: list[tuple[float, float]] = Field(description="[lat, lon] points, in running order")
    tolerance_m: float
    length_m: float = Field(description="the line's length in metres")


class RacePublic(BaseModel):
    id: str
    title: str
    distance_m: float
    scheduled_at: datetime
    capacity: int
    organiser_id: str
    club_id: str | None
    open: bool
    status: str = Field(description="scheduled, countdown, running, paused, finished or aborted")
    start_at: datetime | None = Field(
        description="the gun (server time), once the countdown started"
    )
    registered: list[str]
    course: CoursePublic | None = Field(description="none: a free route")
    cutoff_s: float | None = Field(description="seconds from the gun, pauses excluded")
    auto_start: bool = Field(description="the gun fires at scheduled_at by itself")
    room: str = Field(description="WebSocket path of the live room")


class ResultRow(BaseModel):
    place: int | None
    runner_id: str
    time_s: float | None
    distance_m: float | None
    status: str = Field(description="finished, review, dnf or dq")


class Results(BaseModel):
    race_id: str
    status: str
    results: list[ResultRow]


def _public(s: race_decider.RaceState, now: float) -> RacePublic:
    return RacePublic(
        id=s.race_id,
        title=s.title,
        distance_m=s.distance_m,
        scheduled_at=datetime.fromtimestamp(s.scheduled_at, UTC),
        capacity=s.capacity,
        organiser_id=s.organiser_id,
        club_id=s.club_id,
        open=s.open,
        status=race_decider.status_at(s, now).value,
        start_at=datetime.fromtimestamp(s.start_at, UTC) if s.start_at else None,
        registered=list(s.registered),
        course=_course(s),
        cutoff_s=s.cutoff_s,
        auto_start=s.auto_start,
        room=f"/ws/rooms/{s.race_id}",
    )


def _course(s: race_decider.RaceState) -> CoursePublic | None:
    course = race_decider.course_of(s)
    if course is None:
        return None
    length = course_rules.CourseLine(course).length_m
    return CoursePublic(
        line=list(course.line), tolerance_m=course.tolerance_m, length_m=round(length, 1)
    )


async def _state(store: EventStoreDep, race_id: str) -> race_decider.RaceState:
    state, _ = await load_state(store, f"race-{race_id}", race_decider)
    if state.status == race_decider.RaceStatus.NONE:
        raise ApiError(404, "not_found", f"no race {race_id!r}")
    found: race_decider.RaceState = state
    return found


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RacePublic)
async def create_race(
    body: RaceCreate, runner: CurrentRunner, store: EventStoreDep, projections: ProjectionsDep
) -> RacePublic:
    """Schedule a race (moderators; club owners and admins for their club). You organise it."""
    await require_organiser(store, runner, body.club_id)
    if not body.open and body.club_id is None:
        raise ApiError(422, "invalid", "open: only a club race can be members-only")
    if body.scheduled_at < datetime.now(UTC) - SCHEDULE_GRACE:
        raise ApiError(422, "in_the_past", "scheduled_at: a race is scheduled for a time to come")
    race_id = uuid.uuid4().hex[:12]
    course = (
        course_rules.Course.of(body.course.line, body.course.tolerance_m) if body.course else None
    )
    cmd = race_decider.ScheduleRace(
        race_id,
        body.title,
        body.distance_m,
        body.scheduled_at,
        body.capacity,
        runner.id,
        body.club_id,
        body.open,
        course,
        body.cutoff_s,
        body.auto_start,
    )
    outcome = await execute(store, f"race-{race_id}", race_decider, cmd, meta={"actor": runner.id})
    await projections.run_once()
    return _public(outcome.state, datetime.now(UTC).timestamp())


@router.get("", response_model=list[RacePublic])
async def list_races(engine: EngineDep, store: EventStoreDep) -> list[RacePublic]:
    """Upcoming and live races, soonest first (at most 50)."""
    stmt = (
        select(RACES.c.id)
        .where(RACES.c.status.in_(["scheduled", "countdown", "running", "paused"]))
        .order_by(RACES.c.scheduled_at)
        .limit(50)
    )
    async with engine.connect() as conn:
        ids = list((await conn.execute(stmt)).scalars().all())
    now = datetime.now(UTC).timestamp()
    return [_public(await _state(store, rid), now) for rid in ids]


@router.get("/{race_id}", response_model=RacePublic)
async def get_race(race_id: RaceId, store: EventStoreDep) -> RacePublic:
    """One race: status, the gun time once set, who is registered, and its room."""
    return _public(await _state(store, race_id), datetime.now(UTC).timestamp())


@router.post("/{race_id}/register", response_model=RacePublic)
async def register(
    race_id: RaceId, runner: CurrentRunner, store: EventStoreDep, projections: ProjectionsDep
) -> RacePublic:
    """Register for a race before its start (members-only club races: club members)."""
    race = await _state(store, race_id)
    if not race.open and race.club_id is not None:
        club = await club_state(store, race.club_id)
        if club.role_of(runner.id) is None:
            raise ApiError(403, "forbidden", "this race is for club members only")
    outcome = await execute(
        store,
        f"race-{race_id}",
        race_decider,
        race_decider.Register(runner.id),
        meta={"actor": runner.id},
    )
    await projections.run_once()
    return _public(outcome.state, datetime.now(UTC).timestamp())


@router.post("/{race_id}/withdraw", response_model=RacePublic)
async def withdraw(
    race_id: RaceId, runner: CurrentRunner, store: EventStoreDep, projections: ProjectionsDep
) -> RacePublic:
    """Withdraw from a race."""
    await _state(store, race_id)
    outcome = await execute(
        store,
        f"race-{race_id}",
        race_decider,
        race_decider.Withdraw(runner.id),
        meta={"actor": runner.id},
    )
    await projections.run_once()
    return _public(outcome.state, datetime.now(UTC).timestamp())


@router.get("/{race_id}/results", response_model=Results)
async def results(race_id: RaceId, store: EventStoreDep) -> Results:
    """Final results once the race finished; provisional (finishers so far) while it runs."""
    state = await _state(store, race_id)
    rows: list[dict[str, Any]] = list(state.results) or race_decider.results(state)
    return Results(
        race_id=race_id,
        status=race_decider.status_at(state, datetime.now(UTC).timestamp()).value,
        results=[ResultRow(**r) for r in rows],
    )


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, examples=["the park is closed"])


class DisqualifyBody(Reason):
    runner_id: str = Field(min_length=1, max_length=64)


async def _require_controller(
    store: EventStoreDep, runner: CurrentRunner, race: race_decider.RaceState
) -> None:
    """Who runs a race: moderators and admins, its organiser, and a club race's owner and
    admins (as in its room)."""
    if runner.role in ("moderator", "admin") or runner.id == race.organiser_id:
        return
    if race.club_id is not None and (await club_state(store, race.club_id)).is_admin(runner.id):
        return
    raise ApiError(403, "forbidden", "only moderators and the race's organisers run a race")


@router.post("/{race_id}/cancel", response_model=RacePublic)
async def cancel(
    race_id: RaceId,
    body: Reason,
    runner: CurrentRunner,
    store: EventStoreDep,
    projections: ProjectionsDep,
) -> RacePublic:
    """Call a race off (before or during it) with a reason: it is `aborted`, and its room, if
    open, tells everyone and closes. Its organisers and moderators."""
    await _require_controller(store, runner, await _state(store, race_id))
    outcome = await execute(
        store,
        f"race-{race_id}",
        race_decider,
        race_decider.Abort(runner.id, body.reason),
        meta={"actor": runner.id},
    )
    await projections.run_once()
    return _public(outcome.state, datetime.now(UTC).timestamp())


@router.post("/{race_id}/disqualify", response_model=Results)
async def disqualify(
    race_id: RaceId,
    body: DisqualifyBody,
    runner: CurrentRunner,
    store: EventStoreDep,
    projections: ProjectionsDep,
) -> Results:
    """Disqualify a runner with a reason, also after the results are out (they are re-ranked,
    and the race no longer counts for the runner's boards, XP and badges). Its organisers and
    moderators; during the race the room's `control disqualify` does the same."""
    await _require_controller(store, runner, await _state(store, race_id))
    await execute(
        store,
        f"race-{race_id}",
        race_decider,
        race_decider.Disqualify(runner.id, body.runner_id, body.reason),
        meta={"actor": runner.id},
    )
    await projections.run_once()
    return await results(race_id, store)


@router.patch("/{race_id}", response_model=RacePublic)
async def edit_race(
    race_id: RaceId,
    body: RaceEdit,
    runner: CurrentRunner,
    store: EventStoreDep,
    projections: ProjectionsDep,
) -> RacePublic:
    """Change a race before its countdown: title, time, capacity (not below the runners
    registered), cutoff, auto start. Its organisers and moderators; an open room tells
    everyone (`edited`)."""
    await _require_controller(store, runner, await _state(store, race_id))
    if body.scheduled_at is not None and body.scheduled_at < datetime.now(UTC) - SCHEDULE_GRACE:
        raise ApiError(422, "in_the_past", "scheduled_at: a race is scheduled for a time to come")
    cmd = race_decider.EditRace(
        runner.id, body.title, body.scheduled_at, body.capacity, body.cutoff_s, body.auto_start
    )
    outcome = await execute(store, f"race-{race_id}", race_decider, cmd, meta={"actor": runner.id})
    await projections.run_once()
    return _public(outcome.state, datetime.now(UTC).timestamp())
