"""The Run decider: an uploaded or live-recorded backward run, its verdict and its review.

A run is recorded with the pace check's verdict. A verified run is credited; a run in review waits
for a moderator; a rejected run is not credited. Moderators may approve, reject or crop later:
each decision is an event and every read model follows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np

from game.errors import Conflict, Forbidden, InvalidCommand, NotFound
from game.events import event
from game.pace import Activity, Verdict, check_track, policy_for
from game.track import STANDARD_DISTANCES_M, Track, best_efforts, cleaned_steps


class RunStatus(StrEnum):
    VERIFIED = "verified"
    REVIEW = "review"
    REJECTED = "rejected"


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    CROP = "crop"


# Commands


@dataclass(frozen=True, slots=True)
class SubmitRun:
    run_id: str
    runner_id: str
    activity: Activity
    track: Track
    checklist: dict[str, bool] = field(default_factory=dict)
    #: Another run whose path this one copies (found by `game.replay` in the shell), if any.
    replay_of: str | None = None


@dataclass(frozen=True, slots=True)
class ReviewRun:
    moderator_id: str
    decision: Decision
    reason: str
    #: For a crop: the fix range [start, stop) to credit.
    crop_start: int | None = None
    crop_stop: int | None = None
    track: Track | None = None


@dataclass(frozen=True, slots=True)
class AppealRun:
    runner_id: str
    message: str


# Events


@event("RunRecorded")
@dataclass(frozen=True, slots=True)
class RunRecorded:
    run_id: str
    runner_id: str
    activity: str
    started_at: float  # Unix seconds
    ended_at: float
    distance_m: float
    elapsed_s: float
    moving_s: float
    fix_count: int
    status: str
    score: int
    flags: list[dict[str, Any]]
    low_confidence: bool
    record_eligible: bool
    checklist: dict[str, bool]
    #: Fastest time in seconds over each standard distance covered ("mile", "5k" ...).
    best_efforts_s: dict[str, float] = field(default_factory=dict)


@event("RunVerified")
@dataclass(frozen=True, slots=True)
class RunVerified:
    """The run counts: its credited distance and time feed challenges, boards and rewards."""

    run_id: str
    runner_id: str
    activity: str
    started_at: float
    ended_at: float
    distance_m: float
    elapsed_s: float
    clean: bool
    by: str  # "pace_check" or the moderator's id
    reason: str = ""
    best_efforts_s: dict[str, float] = field(default_factory=dict)


@event("RunSentToReview")
@dataclass(frozen=True, slots=True)
class RunSentToReview:
    run_id: str
    runner_id: str
    score: int
    codes: list[str]


@event("RunRejected")
@dataclass(frozen=True, slots=True)
class RunRejected:
    """The run does not count (any earlier credit is withdrawn)."""

    run_id: str
    runner_id: str
    by: str
    reason: str
    codes: list[str]


@event("RunAppealed")
@dataclass(frozen=True, slots=True)
class RunAppealed:
    run_id: str
    runner_id: str
    message: str


RunEvent = RunRecorded | RunVerified | RunSentToReview | RunRejected | RunAppealed


@dataclass(frozen=True, slots=True)
class RunState:
    exists: bool = False
    run_id: str = ""
    runner_id: str = ""
    activity: str = ""
    status: str = ""
    started_at: float = 0.0
    ended_at: float = 0.0
    distance_m: float = 0.0
    elapsed_s: float = 0.0
    moving_s: float = 0.0
    credited_distance_m: float = 0.0
    credited_elapsed_s: float = 0.0
    score: int = 0
    flags: tuple[dict[str, Any], ...] = ()
    fix_count: int = 0
    best_efforts_s: dict[str, float] = field(default_factory=dict)
    appealed: bool = False
    decisions: int = 0


def initial_state() -> RunState:
    return RunState()


REPLAY_POINTS = 40


def decide(
    state: RunState, command: SubmitRun | ReviewRun | AppealRun, now: datetime
) -> list[RunEvent]:
    """Decide a command against a run's state."""
    if isinstance(command, SubmitRun):
        return _submit(state, command, now)
    if not state.exists:
        raise NotFound("no such run")
    if isinstance(command, ReviewRun):
        return _review(state, command, now)
    return _appeal(state, command)


def _submit(state: RunState, cmd: SubmitRun, now: datetime) -> list[RunEvent]:
    if state.exists:
        raise Conflict("this run was already submitted")
    verdict = check_track(cmd.track, policy_for(cmd.activity), now=now.timestamp())
    flags = [f.to_dict() for f in verdict.flags]
    score, status = verdict.score, verdict.status
    if cmd.replay_of is not None:
        flags.append(
            {
                "code": "replayed_track",
                "message": "this track retraces another run's path point for point",
                "points": REPLAY_POINTS,
                "hard_fail": False,
                "evidence": {"matches_run": cmd.replay_of},
            }
        )
        score += REPLAY_POINTS
        if status == RunStatus.VERIFIED:
            status = RunStatus.REVIEW
    finite = cmd.track.t[np.isfinite(cmd.track.t)]
    started_at = float(finite.min()) if finite.size else 0.0
    ended_at = float(finite.max()) if finite.size else 0.0
    recorded = RunRecorded(
        run_id=cmd.run_id,
        runner_id=cmd.runner_id,
        activity=cmd.activity.value,
        started_at=started_at,
        ended_at=ended_at,
        distance_m=round(verdict.distance_m, 2),
        elapsed_s=round(verdict.elapsed_s, 3),
        moving_s=round(verdict.moving_s, 3),
        fix_count=len(cmd.track),
        status=str(status),
        score=score,
        flags=flags,
        low_confidence=verdict.low_confidence,
        record_eligible=verdict.record_eligible and cmd.replay_of is None,
        checklist=dict(cmd.checklist),
        # kept even when rejected: a moderator's later approval credits them
        best_efforts_s=best_efforts_s(cmd.track) if verdict.fixes_used >= 2 else {},
    )
    codes = [str(f["code"]) for f in flags]
    follow: RunEvent
    if status == RunStatus.VERIFIED:
        follow = _verified(recorded, verdict, by="pace_check")
    elif status == RunStatus.REVIEW:
        follow = RunSentToReview(cmd.run_id, cmd.runner_id, score, codes)
    else:
        follow = RunRejected(
            cmd.run_id, cmd.runner_id, "pace_check", "failed the pace check", codes
        )
    return [recorded, follow]


def _verified(rec: RunRecorded, verdict: Verdict, by: str, reason: str = "") -> RunVerified:
    return RunVerified(
        run_id=rec.run_id,
        runner_id=rec.runner_id,
        activity=rec.activity,
        started_at=rec.started_at,
        ended_at=rec.ended_at,
        distance_m=rec.distance_m,
        elapsed_s=rec.elapsed_s,
        clean=not verdict.flags,
        by=by,
        reason=reason,
        best_efforts_s=rec.best_efforts_s,
    )


def _review(state: RunState, cmd: ReviewRun, now: datetime) -> list[RunEvent]:
    if not cmd.reason.strip():
        raise InvalidCommand("a moderator decision needs a reason")
    if cmd.decision == Decision.REJECT:
        if state.status == RunStatus.REJECTED:
            raise Conflict("the run is already rejected")
        codes = [str(f["code"]) for f in state.flags]
        return [RunRejected(state.run_id, state.runner_id, cmd.moderator_id, cmd.reason, codes)]
    if cmd.decision == Decision.APPROVE:
        if state.status == RunStatus.VERIFIED:
            raise Conflict("the run is already verified")
        return [
            RunVerified(
                run_id=state.run_id,
                runner_id=state.runner_id,
                activity=state.activity,
                started_at=state.started_at,
                ended_at=state.ended_at,
                distance_m=state.distance_m,
                elapsed_s=state.elapsed_s,
                clean=False,
                by=cmd.moderator_id,
                reason=cmd.reason,
                best_efforts_s=state.best_efforts_s,
            )
        ]
    return [_crop(state, cmd, now)]


def _crop(state: RunState, cmd: ReviewRun, now: datetime) -> RunVerified:
    """Credit only part of the track: the pace check re-runs on the kept fixes."""
    if cmd.track is None or cmd.crop_start is None or cmd.crop_stop is None:
        raise InvalidCommand("a crop needs the fix range to keep")
    if (
        not 0 <= cmd.crop_start < cmd.crop_stop <= len(cmd.track)
        or cmd.crop_stop - cmd.crop_start < 2
    ):
        raise InvalidCommand(f"the crop range must lie within the run's {len(cmd.track)} fixes")
    part = cmd.track.slice(cmd.crop_start, cmd.crop_stop)
    verdict = check_track(part, policy_for(Activity(state.activity)), now=now.timestamp())
    if verdict.status == RunStatus.REJECTED:
        codes = ", ".join(f.code for f in verdict.flags)
        raise InvalidCommand(f"the cropped part still fails the pace check ({codes})")
    return RunVerified(
        run_id=state.run_id,
        runner_id=state.runner_id,
        activity=state.activity,
        started_at=float(part.t[0]),
        ended_at=float(part.t[-1]),
        distance_m=round(verdict.distance_m, 2),
        elapsed_s=round(verdict.elapsed_s, 3),
        clean=False,
        by=cmd.moderator_id,
        reason=cmd.reason,
        best_efforts_s=best_efforts_s(part),
    )


def _appeal(state: RunState, cmd: AppealRun) -> list[RunEvent]:
    if cmd.runner_id != state.runner_id:
        raise Forbidden("only the runner may appeal their run")
    if state.status != RunStatus.REJECTED:
        raise Conflict("only a rejected run can be appealed")
    if state.appealed:
        raise Conflict("this run was already appealed")
    if not cmd.message.strip():
        raise InvalidCommand("an appeal needs a message")
    return [RunAppealed(state.run_id, state.runner_id, cmd.message.strip())]


def best_efforts_s(track: Track) -> dict[str, float]:
    """Fastest time over each standard distance, on the cleaned valid fixes of a track."""
    t, lat, lon, acc = track.t, track.lat, track.lon, track.acc_m
    ok = (
        np.isfinite(t)
        & np.isfinite(lat)
        & np.isfinite(lon)
        & (np.abs(lat) <= 90)
        & (np.abs(lon) <= 180)
    )
    order = np.argsort(t[ok], kind="stable")
    t, lat, lon, acc = t[ok][order], lat[ok][order], lon[ok][order], acc[ok][order]
    if t.shape[0] < 2:
        return {}
    keep = np.concatenate(([True], np.diff(t) > 0))
    t, lat, lon, acc = t[keep], lat[keep], lon[keep], acc[keep]
    sigma = np.where(np.isfinite(acc) & (acc > 0), acc, 10.0)
    steps = cleaned_steps(t, lat, lon, sigma, np.diff(t) <= 60.0)
    efforts = best_efforts(steps.cum_m, t)
    return {
        name: round(efforts[d].duration_s, 2)
        for name, d in STANDARD_DISTANCES_M.items()
        if d in efforts
    }


def evolve(state: RunState, evt: RunEvent) -> RunState:
    """Apply one event to a run's state."""
    if isinstance(evt, RunRecorded):
        return RunState(
            exists=True,
            run_id=evt.run_id,
            runner_id=evt.runner_id,
            activity=evt.activity,
            status=evt.status,
            started_at=evt.started_at,
            ended_at=evt.ended_at,
            distance_m=evt.distance_m,
            elapsed_s=evt.elapsed_s,
            moving_s=evt.moving_s,
            score=evt.score,
            flags=tuple(evt.flags),
            fix_count=evt.fix_count,
            best_efforts_s=dict(evt.best_efforts_s),
        )
    if isinstance(evt, RunVerified):
        return replace(
            state,
            status=RunStatus.VERIFIED.value,
            credited_distance_m=evt.distance_m,
            credited_elapsed_s=evt.elapsed_s,
            decisions=state.decisions + (evt.by != "pace_check"),
        )
    if isinstance(evt, RunSentToReview):
        return replace(state, status=RunStatus.REVIEW.value)
    if isinstance(evt, RunRejected):
        return replace(
            state,
            status=RunStatus.REJECTED.value,
            credited_distance_m=0.0,
            credited_elapsed_s=0.0,
            decisions=state.decisions + (evt.by != "pace_check"),
        )
    return replace(state, status=RunStatus.REVIEW.value, appealed=True)
