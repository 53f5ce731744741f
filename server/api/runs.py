"""Runs: upload (JSON track or GPX), read, appeal, and the moderators' review queue."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Header, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from sqlalchemy import insert, select

from game import races
from game import runs as run_decider
from game.errors import DomainError, InvalidCommand
from game.pace import Activity
from game.privacy import Zone, mask_track, may_see_shared_track
from game.replay import find_replay, fingerprint
from game.track import Track
from server.commands import execute, load_state
from server.deps import (
    CurrentRunner,
    EngineDep,
    EventStoreDep,
    Moderator,
    ProjectionsDep,
    SettingsDep,
)
from server.errors import ApiError
from server.gpx import parse_gpx
from server.privacy import load as load_privacy
from server.privacy import shares_club
from server.shred import encrypt_for
from server.store.db import writer
from server.store.event_store import ConcurrencyError, NewEvent
from server.store.progress import RUNS
from server.store.race_projection import race_of_run
from server.store.read_models import RunTrackRow
from server.tracks import as_stored, decode_track, encode_track

router = APIRouter(tags=["runs"])
TRACKS = RunTrackRow.__table__  # type: ignore[attr-defined]
_RUN_NS = uuid.UUID("5d1f8f2e-6a53-4c1b-9a54-2f0d2b6c7e11")
REPLAY_LOOKBACK_S = 90 * 24 * 3600
REPLAY_CANDIDATES = 500
CHECKLIST_ITEMS = ("flat_clear_surface", "soft_surface", "spotter_present", "route_walked_first")


class FixIn(BaseModel):
    """One GPS fix. `t` is Unix seconds (UTC) as a number; angles are degrees from north."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    t: float = Field(examples=[1764068400.0])
    lat: float = Field(ge=-90, le=90, examples=[52.52])
    lon: float = Field(ge=-180, le=180, examples=[13.405])
    acc: float | None = Field(default=None, description="horizontal accuracy, metres (68%)")
    speed: float | None = None
    course: float | None = None
    course_acc: float | None = None
    heading: float | None = Field(
        default=None, description="device azimuth (where the phone faces)"
    )
    cadence: float | None = Field(default=None, description="steps per minute")
    hr: float | None = None
    ele: float | None = None
    mock: bool = False


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    activity: Activity = Activity.BACKWARD_RUN
    points: list[FixIn] = Field(min_length=1)
    checklist: dict[str, bool] = Field(
        default_factory=dict,
        description="pre-run safety checklist: " + ", ".join(CHECKLIST_ITEMS),
    )


class FlagOut(BaseModel):
    code: str
    message: str
    points: int
    hard_fail: bool
    evidence: dict[str, Any]


class RunPublic(BaseModel):
    id: str
    runner_id: str
    activity: str
    status: Literal["verified", "review", "rejected"]
    distance_m: float = Field(description="cleaned distance of the whole track")
    duration_s: float = Field(description="elapsed (gun) time")
    moving_s: float
    credited_distance_m: float
    started_at: datetime | None
    ended_at: datetime | None
    score: int = Field(
        description="pace-check suspicion score: < 30 verified, 30-59 review, >= 60 rejected"
    )
    flags: list[FlagOut]
    best_efforts_s: dict[str, float]
    fix_count: int
    appealed: bool


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: run_decider.Decision
    reason: str = Field(min_length=3, max_length=500)
    crop_start: int | None = Field(default=None, ge=0, description="crop: first fix to keep")
    crop_stop: int | None = Field(default=None, ge=1, description="crop: fix after the last kept")


class AppealIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=3, max_length=2000)


class QueueItem(BaseModel):
    id: str
    runner_id: str
    score: int
    distance_m: float
    duration_s: float
    ended_at: datetime
    appealed: bool
    codes: list[str]
    activity: str = Field(description="`race` for a race finish in review")
    race_id: str | None = Field(default=None, description="the race of a race finish")
    flags: list[FlagOut] = Field(description="the pace check's reasons, with their evidence")


def _when(ts: float) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


def _public(s: run_decider.RunState) -> RunPublic:
    return RunPublic(
        id=s.run_id,
        runner_id=s.runner_id,
        activity=s.activity,
        status=s.status,
        distance_m=s.distance_m,
        duration_s=s.elapsed_s,
        moving_s=s.moving_s,
        credited_distance_m=s.credited_distance_m,
        started_at=_when(s.started_at),
        ended_at=_when(s.ended_at),
        score=s.score,
        flags=[FlagOut(**f) for f in s.flags],
        best_efforts_s=s.best_efforts_s,
        fix_count=s.fix_count,
        appealed=s.appealed,
    )


def _track(points: list[FixIn]) -> Track:
    def col(name: str) -> list[float]:
        return [np.nan if getattr(p, name) is None else getattr(p, name) for p in points]

    return Track.from_arrays(
        [p.t for p in points],
        [p.lat for p in points],
        [p.lon for p in points],
        mock=[p.mock for p in points],
        acc_m=col("acc"),
        speed_mps=col("speed"),
        course_deg=col("course"),
        course_acc_deg=col("course_acc"),
        heading_deg=col("heading"),
        cadence_spm=col("cadence"),
        hr_bpm=col("hr"),
        ele_m=col("ele"),
    )


async def _read_upload(
    request: Request, max_fixes: int
) -> tuple[Activity, Track, dict[str, bool], bytes]:
    """The track of a JSON or multipart (GPX) upload, and a digest source of the request."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=20)
        upload = form.get("gpx")
        if upload is None or isinstance(upload, str):
            raise ApiError(
                422, "invalid", "multipart uploads carry the track in a `gpx` file field"
            )
        data = await upload.read()
        try:
            activity = Activity(str(form.get("activity") or Activity.BACKWARD_RUN.value))
        except ValueError as exc:
            raise ApiError(422, "invalid", "activity: unknown activity") from exc
        checklist = {
            k: str(form.get(k)).lower() in ("1", "true", "yes", "on")
            for k in CHECKLIST_ITEMS
            if k in form
        }
        track = parse_gpx(data, max_points=max_fixes)
        return activity, track, checklist, data + activity.value.encode()
    if not content_type.startswith("application/json"):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send application/json or multipart/form-data with a gpx file",
        )
    raw = await request.body()
    try:
        body = TypeAdapter(RunCreate).validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ApiError(422, "invalid", f"{where}: {first['msg']}") from exc
    if len(body.points) > max_fixes:
        raise ApiError(422, "too_many_fixes", f"a run carries at most {max_fixes} fixes")
    return body.activity, _track(body.points), body.checklist, raw


@router.post(
    "/runs",
    status_code=status.HTTP_201_CREATED,
    response_model=RunPublic,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": RunCreate.model_json_schema(
                        ref_template="#/components/schemas/{model}"
                    )
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "gpx": {"type": "string", "format": "binary"},
                            "activity": {"type": "string", "enum": [a.value for a in Activity]},
                        },
                        "required": ["gpx"],
                    }
                },
            },
            "required": True,
        }
    },
)
async def submit_run(
    request: Request,
    response: Response,
    runner: CurrentRunner,
    store: EventStoreDep,
    engine: EngineDep,
    settings: SettingsDep,
    projections: ProjectionsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RunPublic:
    """Upload a run. The pace check decides `verified`, `review` or `rejected`, with reasons.

    Send an `Idempotency-Key` header: a retry with the same key and body returns the first
    answer; the same key with another body is refused (422).
    """
    activity, track, checklist, raw = await _read_upload(request, settings.max_fixes)
    digest = hashlib.sha256(raw).hexdigest()
    run_id = str(
        uuid.uuid5(_RUN_NS, f"{runner.id}:{idempotency_key}") if idempotency_key else uuid.uuid4()
    )
    stream = f"run-{run_id}"
    key = f"run:{runner.id}:{idempotency_key}" if idempotency_key else None

    if key is not None:
        replayed = await _replayed(store, stream, digest)
        if replayed is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return replayed

    now = datetime.now(UTC)
    track = await asyncio.to_thread(as_stored, track)  # verified as stored: re-checks agree
    fp = await asyncio.to_thread(fingerprint, track)
    replay_of = await _find_replay(engine, runner.id, fp, now.timestamp())
    command = run_decider.SubmitRun(run_id, runner.id, activity, track, checklist, replay_of)
    events = await asyncio.to_thread(run_decider.decide, run_decider.initial_state(), command, now)
    blob = encode_track(track)
    try:
        async with engine.connect() as raw_conn:
            conn = await writer(raw_conn)
            async with conn.begin():
                await store.append_in(
                    conn,
                    stream,
                    0,
                    [NewEvent.of(e) for e in events],
                    meta={"actor": runner.id, "request_hash": digest},
                    idempotency_key=key,
                )
                await conn.execute(
                    insert(TRACKS).values(
                        run_id=run_id,
                        runner_id=runner.id,
                        fix_count=len(track),
                        data=blob,
                        fingerprint=fp.astype(np.float64).tobytes(),
                        recorded_at=now.timestamp(),
                    )
                )
    except ConcurrencyError:  # the same key raced us and won
        replayed = await _replayed(store, stream, digest)
        if replayed is None:
            raise
        response.headers["Idempotent-Replayed"] = "true"
        return replayed
    store.notify_appended()
    await projections.run_once()
    state = run_decider.initial_state()
    for e in events:
        state = run_decider.evolve(state, e)
    return _public(state)


async def _replayed(store: EventStoreDep, stream: str, digest: str) -> RunPublic | None:
    recorded = await store.load(stream)
    if not recorded:
        return None
    if recorded[0].meta.get("request_hash") != digest:
        raise DomainError(
            "this Idempotency-Key was already used with a different run",
            code="idempotency_key_reused",
        )
    state, _ = await load_state(store, stream, run_decider)
    return _public(state)


async def _find_replay(engine: EngineDep, runner_id: str, fp: np.ndarray, now: float) -> str | None:
    """Compare with recent tracks of other runners (bounded)."""
    if fp.shape[0] < 8:
        return None
    stmt = (
        select(TRACKS.c.run_id, TRACKS.c.fingerprint)
        .where(TRACKS.c.runner_id != runner_id, TRACKS.c.recorded_at >= now - REPLAY_LOOKBACK_S)
        .order_by(TRACKS.c.recorded_at.desc())
        .limit(REPLAY_CANDIDATES)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    candidates = [
        (r.run_id, np.frombuffer(r.fingerprint, dtype=np.float64).reshape(-1, 3))
        for r in rows
        if r.fingerprint
    ]
    match = await asyncio.to_thread(find_replay, fp, candidates)
    return match.candidate_id if match else None


async def _owned_state(store: EventStoreDep, run_id: str, runner: Any) -> run_decider.RunState:
    state, _ = await load_state(store, f"run-{run_id}", run_decider)
    if not state.exists or (
        state.runner_id != runner.id and runner.role not in ("moderator", "admin")
    ):
        raise ApiError(404, "not_found", f"no run {run_id!r}")
    found: run_decider.RunState = state
    return found


async def _race_run(engine: EngineDep, run_id: str, runner: Any) -> tuple[str, Any] | None:
    """A race finish's run (its race id and read-model row) that `runner` may see, or None."""
    async with engine.connect() as conn:
        found = await race_of_run(conn, run_id)
        row = (await conn.execute(select(RUNS).where(RUNS.c.id == run_id))).first()
    if found is None or row is None:
        return None
    if row.runner_id != runner.id and runner.role not in ("moderator", "admin"):
        return None
    return found[0], row


@router.get("/runs/{run_id}", response_model=RunPublic)
async def get_run(
    run_id: str, runner: CurrentRunner, store: EventStoreDep, engine: EngineDep
) -> RunPublic:
    """One of your runs, race finishes included (moderators see every run)."""
    race_run = await _race_run(engine, run_id, runner)
    if race_run is not None:
        return _row_public(race_run[1])
    return _public(await _owned_state(store, run_id, runner))


class TrackPoint(BaseModel):
    t: float
    lat: float
    lon: float
    acc: float | None


@router.get("/runs/{run_id}/track", response_model=list[TrackPoint])
async def get_track(
    run_id: str,
    runner: CurrentRunner,
    store: EventStoreDep,
    engine: EngineDep,
    shared: Annotated[
        bool,
        Query(
            description="club-mates: the shared view, without the fixes inside the runner's "
            "privacy zones (when the runner's activity visibility is not `nobody`)"
        ),
    ] = False,
) -> list[TrackPoint]:
    """The GPS points of a run: whole for its runner and moderators only (tracks are personal
    data); with `shared=true`, club-mates get it with the runner's privacy zones cut out."""
    state, _ = await load_state(store, f"run-{run_id}", run_decider)
    if not state.exists:
        raise ApiError(404, "not_found", f"no run {run_id!r}")
    full = state.runner_id == runner.id or runner.role in ("moderator", "admin")
    zones: list[Zone] = []
    if not full:
        if not shared:
            raise ApiError(404, "not_found", f"no run {run_id!r}")
        settings = await load_privacy(engine, state.runner_id)
        clubmate = await shares_club(engine, state.runner_id, runner.id)
        if not may_see_shared_track(
            settings.activity_visibility, is_owner=False, is_moderator=False, shares_club=clubmate
        ):
            raise ApiError(404, "not_found", f"no run {run_id!r}")
        zones = [z.zone for z in settings.zones]
    async with engine.connect() as conn:
        stmt = select(TRACKS.c.data).where(TRACKS.c.run_id == run_id)
        blob = (await conn.execute(stmt)).scalar_one_or_none()
    if blob is None:
        raise ApiError(404, "track_missing", "this run's track is not stored")
    track = await asyncio.to_thread(decode_track, blob)
    if not full:
        track = await asyncio.to_thread(mask_track, track, zones)
    return [TrackPoint(t=f.t, lat=f.lat, lon=f.lon, acc=f.acc_m) for f in track.fixes()]


@router.get("/me/runs", response_model=list[RunPublic])
async def my_runs(
    runner: CurrentRunner,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> list[RunPublic]:
    """Your runs, newest first."""
    stmt = (
        select(RUNS)
        .where(RUNS.c.runner_id == runner.id)
        .order_by(RUNS.c.ended_at.desc(), RUNS.c.id)
        .limit(limit)
        .offset(offset)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [_row_public(r) for r in rows]


def _row_public(r: Any) -> RunPublic:
    """A run from its read-model row."""
    return RunPublic(
        id=r.id,
        runner_id=r.runner_id,
        activity=r.activity,
        status=r.status,
        distance_m=r.distance_m,
        duration_s=r.elapsed_s,
        moving_s=r.moving_s,
        credited_distance_m=r.credited_distance_m,
        started_at=_when(r.started_at),
        ended_at=_when(r.ended_at),
        score=r.score,
        flags=[FlagOut(**f) for f in r.flags],
        best_efforts_s=r.best_efforts_s,
        fix_count=r.fix_count,
        appealed=r.appealed,
    )


@router.post("/runs/{run_id}/review", response_model=RunPublic)
async def review_run(
    run_id: str,
    body: ReviewIn,
    moderator: Moderator,
    store: EventStoreDep,
    engine: EngineDep,
    projections: ProjectionsDep,
) -> RunPublic:
    """Moderators: approve, reject or crop a run, with a reason. Every board follows.

    A race finish in review (`activity: race`) is approved or rejected whole (no crop): the
    decision lands on the race, whose results follow."""
    race_run = await _race_run(engine, run_id, moderator)
    if race_run is not None:
        race_id = race_run[0]
        return await _review_race_finish(
            run_id, race_id, body, moderator, store, engine, projections
        )
    await _owned_state(store, run_id, moderator)
    track = None
    if body.decision == run_decider.Decision.CROP:
        async with engine.connect() as conn:
            blob = (
                await conn.execute(select(TRACKS.c.data).where(TRACKS.c.run_id == run_id))
            ).scalar_one_or_none()
        if blob is None:
            raise ApiError(409, "track_missing", "this run's track is no longer stored")
        track = decode_track(blob)
    command = run_decider.ReviewRun(
        moderator.id, body.decision, body.reason, body.crop_start, body.crop_stop, track
    )
    outcome = await execute(
        store, f"run-{run_id}", run_decider, command, meta={"actor": moderator.id}
    )
    await projections.run_once()
    return _public(outcome.state)


_FINISH_DECISIONS = {
    run_decider.Decision.APPROVE: races.FinishDecision.APPROVE,
    run_decider.Decision.REJECT: races.FinishDecision.REJECT,
}


async def _review_race_finish(
    run_id: str,
    race_id: str,
    body: ReviewIn,
    moderator: Any,
    store: EventStoreDep,
    engine: EngineDep,
    projections: ProjectionsDep,
) -> RunPublic:
    decision = _FINISH_DECISIONS.get(body.decision)
    if decision is None:
        raise InvalidCommand("a race finish is approved or rejected whole: it cannot be cropped")
    async with engine.connect() as conn:
        runner_id = (
            await conn.execute(select(RUNS.c.runner_id).where(RUNS.c.id == run_id))
        ).scalar_one()
    command = races.ReviewFinish(moderator.id, runner_id, decision, body.reason)
    await execute(store, f"race-{race_id}", races, command, meta={"actor": moderator.id})
    await projections.run_once()
    async with engine.connect() as conn:
        row = (await conn.execute(select(RUNS).where(RUNS.c.id == run_id))).one()
    return _row_public(row)


@router.post("/runs/{run_id}/appeal", response_model=RunPublic)
async def appeal_run(
    run_id: str,
    body: AppealIn,
    runner: CurrentRunner,
    store: EventStoreDep,
    projections: ProjectionsDep,
) -> RunPublic:
    """Appeal a rejected run: it goes back to the moderators' queue.

    The message is stored encrypted under your data key: deleting your account erases it.
    """
    await _owned_state(store, run_id, runner)
    sealed = await encrypt_for(store.engine, runner.id, body.message.strip())
    outcome = await execute(
        store,
        f"run-{run_id}",
        run_decider,
        run_decider.AppealRun(runner.id, sealed),
        meta={"actor": runner.id},
    )
    await projections.run_once()
    return _public(outcome.state)


@router.get("/moderation/queue", response_model=list[QueueItem])
async def review_queue(
    moderator: Moderator,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> list[QueueItem]:
    """Moderators: runs waiting for review, most suspicious first: uploads, appeals and race
    finishes the pace check doubted (`activity: race`, with `race_id`), each with its flags."""
    stmt = (
        select(RUNS)
        .where(RUNS.c.status == "review")
        .order_by(RUNS.c.score.desc(), RUNS.c.ended_at)
        .limit(limit)
        .offset(offset)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
        races_of = {r.id: await race_of_run(conn, r.id) for r in rows if r.activity == "race"}
    return [
        QueueItem(
            id=r.id,
            runner_id=r.runner_id,
            score=r.score,
            distance_m=r.distance_m,
            duration_s=r.elapsed_s,
            ended_at=datetime.fromtimestamp(r.ended_at, UTC),
            appealed=r.appealed,
            codes=[f["code"] for f in r.flags],
            activity=r.activity,
            race_id=(races_of.get(r.id) or (None, None))[0],
            flags=[FlagOut(**f) for f in r.flags],
        )
        for r in rows
    ]
