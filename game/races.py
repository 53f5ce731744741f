"""The Race decider and the pure live-race engine.

A race goes scheduled -> countdown -> running (<-> paused) -> finished, or aborted. Runners
register before the start; during the race each one finishes (credited distance reaches the race
distance, the finish time interpolated between fixes), does not finish, or is disqualified.
The room in `server/rooms` feeds fixes to `RaceLive` and turns its outcomes into commands here.

A race is a free route (any path: the distance run counts) or a course (`game.course`: progress
along a line, within a tolerance of it). Distance covered while the race is paused earns nothing.
A race has a cutoff: time from the gun (pauses excluded) after which it closes by itself, and the
runners still out are DNF; a runner may also retire (DNF) at any time during the race.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from game.course import MAX_SPEED_MPS as COURSE_MAX_SPEED_MPS
from game.course import REACH_M, Course, CourseLine
from game.errors import Conflict, Forbidden, InvalidCommand
from game.events import event
from game.pace import (
    Activity,
    Flag,
    LiveCheck,
    PacePolicy,
    Verdict,
    check_fixes,
    policy_for,
)
from game.track import Fix


class RaceStatus(StrEnum):
    NONE = "none"
    SCHEDULED = "scheduled"
    COUNTDOWN = "countdown"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    ABORTED = "aborted"


MIN_DISTANCE_M, MAX_DISTANCE_M = 50.0, 42_195.0
MAX_CAPACITY = 5000
MIN_COUNTDOWN_S, MAX_COUNTDOWN_S = 3.0, 600.0
MIN_CUTOFF_S, MAX_CUTOFF_S = 60.0, 86_400.0
#: Off the course line for this long (every fix beyond the tolerance): `off_course` to moderators.
OFF_COURSE_S = 15.0
#: Moved this far on while the race was paused: `moved_while_paused` to moderators.
PAUSE_GAIN_FLAG_M = 20.0
#: Soft live signals a race's moderators are told of, beside every hard fail.
SUSPECT_CODES = frozenset({"fast_pace", "off_course", "moved_while_paused"})


def default_cutoff_s(distance_m: float) -> float:
    """An hour, plus 1.2 s a metre (a slow backward walk of 0.83 m/s): 2 h 40 min for 5 km."""
    return min(MAX_CUTOFF_S, 3600.0 + 1.2 * distance_m)


# Commands


@dataclass(frozen=True, slots=True)
class ScheduleRace:
    race_id: str
    title: str
    distance_m: float
    scheduled_at: datetime
    capacity: int
    organiser_id: str
    club_id: str | None = None
    open: bool = True
    course: Course | None = None  # None: a free route
    cutoff_s: float | None = None  # None: `default_cutoff_s(distance_m)`
    auto_start: bool = False  # the countdown starts by itself: the gun at `scheduled_at`


@dataclass(frozen=True, slots=True)
class EditRace:
    """Change a scheduled race (before its countdown): only the fields given change."""

    by: str
    title: str | None = None
    scheduled_at: datetime | None = None
    capacity: int | None = None
    cutoff_s: float | None = None
    auto_start: bool | None = None


@dataclass(frozen=True, slots=True)
class Register:
    runner_id: str


@dataclass(frozen=True, slots=True)
class Withdraw:
    runner_id: str


@dataclass(frozen=True, slots=True)
class StartCountdown:
    by: str
    countdown_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Pause:
    by: str


@dataclass(frozen=True, slots=True)
class Resume:
    by: str


@dataclass(frozen=True, slots=True)
class Abort:
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class Disqualify:
    by: str
    runner_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Retire:
    """A runner stops racing (DNF), by their own choice."""

    runner_id: str


@dataclass(frozen=True, slots=True)
class Finish:
    """A runner crossed the line (decided by `RaceLive`); `time_s` is race time, pauses excluded."""

    runner_id: str
    time_s: float
    distance_m: float
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class StoreFixes:
    runner_id: str
    chunk: int
    first_seq: int
    last_seq: int
    count: int


@dataclass(frozen=True, slots=True)
class StoreFixesBatch:
    """Several runners' chunks stored in one flush: one event instead of one per runner.

    All or nothing: a chunk of a runner not registered refuses the whole batch (the room leaves
    such chunks out before it decides).
    """

    chunks: tuple[StoreFixes, ...]


@dataclass(frozen=True, slots=True)
class Close:
    """End the race: runners still out are DNF; results are published."""

    by: str


class FinishDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class ReviewFinish:
    """A moderator decides a finish the pace check sent to review (after the results are out):
    approve credits it as a run, reject takes it out of the placings. Either may be reversed."""

    by: str
    runner_id: str
    decision: FinishDecision
    reason: str


# Events


@event("RaceScheduled")
@dataclass(frozen=True, slots=True)
class RaceScheduled:
    race_id: str
    title: str
    distance_m: float
    scheduled_at: float
    capacity: int
    organiser_id: str
    club_id: str | None
    open: bool
    #: `Course.to_dict()`: the line as [lat, lon] points and the tolerance (older logs: none).
    course: dict[str, Any] | None = None
    #: Seconds from the gun, pauses excluded, after which the race closes (older logs: none).
    cutoff_s: float | None = None
    #: The countdown starts by itself, for a gun at `scheduled_at` (older logs: no).
    auto_start: bool = False


@event("RaceEdited")
@dataclass(frozen=True, slots=True)
class RaceEdited:
    """Fields of a scheduled race changed: `changes` holds the new `title`, `scheduled_at`
    (Unix seconds), `capacity`, `cutoff_s` and `auto_start`, those that changed."""

    race_id: str
    by: str
    changes: dict[str, Any]


@event("RunnerRegistered")
@dataclass(frozen=True, slots=True)
class RunnerRegistered:
    race_id: str
    runner_id: str


@event("RunnerWithdrew")
@dataclass(frozen=True, slots=True)
class RunnerWithdrew:
    race_id: str
    runner_id: str


@event("CountdownStarted")
@dataclass(frozen=True, slots=True)
class CountdownStarted:
    race_id: str
    start_at: float  # Unix seconds: the gun
    by: str


@event("RacePaused")
@dataclass(frozen=True, slots=True)
class RacePaused:
    race_id: str
    at: float
    by: str


@event("RaceResumed")
@dataclass(frozen=True, slots=True)
class RaceResumed:
    race_id: str
    at: float
    paused_s: float
    by: str


@event("RaceAborted")
@dataclass(frozen=True, slots=True)
class RaceAborted:
    race_id: str
    at: float
    by: str
    reason: str


@event("RunnerDisqualified")
@dataclass(frozen=True, slots=True)
class RunnerDisqualified:
    race_id: str
    runner_id: str
    by: str
    reason: str


@event("RunnerRetired")
@dataclass(frozen=True, slots=True)
class RunnerRetired:
    race_id: str
    runner_id: str
    at: float


@event("RunnerFinished")
@dataclass(frozen=True, slots=True)
class RunnerFinished:
    race_id: str
    runner_id: str
    time_s: float
    distance_m: float
    status: str  # the pace verdict at the finish: verified / review / rejected
    score: int
    codes: list[str]
    #: The pace check's flags with their evidence (older logs: none).
    flags: list[dict[str, Any]] = field(default_factory=list)


@event("FixesStored")
@dataclass(frozen=True, slots=True)
class FixesStored:
    """A chunk of a runner's fixes was stored (the blob lives beside the log, not in it)."""

    race_id: str
    runner_id: str
    chunk: int
    first_seq: int
    last_seq: int
    count: int


@event("FixesBatchStored")
@dataclass(frozen=True, slots=True)
class FixesBatchStored:
    """Chunks of several runners' fixes stored in one flush (the blobs live beside the log).

    Each chunk is `{runner_id, chunk, first_seq, last_seq, count}`. Replaces one `FixesStored`
    per runner per flush; logs holding `FixesStored` still fold.
    """

    race_id: str
    chunks: list[dict[str, Any]]


@event("RaceFinished")
@dataclass(frozen=True, slots=True)
class RaceFinished:
    race_id: str
    at: float
    results: list[dict[str, Any]]


@event("RaceFinishSentToReview")
@dataclass(frozen=True, slots=True)
class RaceFinishSentToReview:
    """With the results: a finish the pace check doubted waits for a moderator (like a run)."""

    race_id: str
    runner_id: str
    time_s: float
    distance_m: float
    score: int
    flags: list[dict[str, Any]]


@event("RaceFinishApproved")
@dataclass(frozen=True, slots=True)
class RaceFinishApproved:
    """A moderator credits a reviewed finish; `results` are the published results after it."""

    race_id: str
    runner_id: str
    by: str
    reason: str
    results: list[dict[str, Any]]


@event("RaceFinishRejected")
@dataclass(frozen=True, slots=True)
class RaceFinishRejected:
    """A moderator rejects a reviewed finish: unplaced (`dq`), never credited."""

    race_id: str
    runner_id: str
    by: str
    reason: str
    results: list[dict[str, Any]]


RaceEvent = (
    RaceScheduled
    | RaceEdited
    | RunnerRegistered
    | RunnerWithdrew
    | CountdownStarted
    | RacePaused
    | RaceResumed
    | RaceAborted
    | RunnerDisqualified
    | RunnerRetired
    | RunnerFinished
    | FixesStored
    | FixesBatchStored
    | RaceFinished
    | RaceFinishSentToReview
    | RaceFinishApproved
    | RaceFinishRejected
)


@dataclass(frozen=True, slots=True)
class Result:
    runner_id: str
    time_s: float
    distance_m: float
    status: str  # verified / review / rejected: the pace verdict, then a moderator's decision
    score: int
    codes: tuple[str, ...]
    flags: tuple[dict[str, Any], ...] = ()
    #: The pace check sent this finish to review: a moderator may decide it.
    reviewable: bool = False


@dataclass(frozen=True, slots=True)
class RaceState:
    status: RaceStatus = RaceStatus.NONE
    race_id: str = ""
    title: str = ""
    distance_m: float = 0.0
    scheduled_at: float = 0.0
    capacity: int = 0
    organiser_id: str = ""
    club_id: str | None = None
    open: bool = True
    course: dict[str, Any] | None = None  # `Course.to_dict()`, None: a free route
    cutoff_s: float | None = None
    auto_start: bool = False
    registered: tuple[str, ...] = ()  # in registration order
    #: The same runners as `registered`, for O(1) membership (kept in step by `evolve`).
    registered_set: frozenset[str] = frozenset()
    start_at: float | None = None
    paused_at: float | None = None
    paused_s: float = 0.0
    pauses: tuple[tuple[float, float], ...] = ()  # (paused at, resumed at), past pauses
    finished: dict[str, Result] = field(default_factory=dict)
    disqualified: dict[str, str] = field(default_factory=dict)
    retired: frozenset[str] = frozenset()
    chunks: dict[str, int] = field(default_factory=dict)  # runner -> last stored seq
    results: tuple[dict[str, Any], ...] = ()


def initial_state() -> RaceState:
    return RaceState()


Command = (
    ScheduleRace
    | EditRace
    | Register
    | Withdraw
    | StartCountdown
    | Pause
    | Resume
    | Abort
    | Disqualify
    | Retire
    | Finish
    | StoreFixes
    | StoreFixesBatch
    | Close
    | ReviewFinish
)


def decide(state: RaceState, command: Command, now: datetime) -> list[RaceEvent]:
    """Decide a race command."""
    t = now.timestamp()
    if isinstance(command, ScheduleRace):
        return [_schedule(state, command)]
    if state.status == RaceStatus.NONE:
        raise InvalidCommand("no such race", code="not_found")
    rid = state.race_id
    live = (RaceStatus.RUNNING, RaceStatus.PAUSED)
    match command:
        case EditRace():
            return _edit(state, command)
        case Register(runner_id):
            if _status_at(state, t) not in (RaceStatus.SCHEDULED, RaceStatus.COUNTDOWN):
                raise Conflict("registration is closed", code="registration_closed")
            if runner_id in state.registered_set:
                raise Conflict("you are already registered", code="already_registered")
            if len(state.registered) >= state.capacity:
                raise Conflict("the race is full", code="race_full")
            return [RunnerRegistered(rid, runner_id)]
        case Withdraw(runner_id):
            if runner_id not in state.registered_set:
                raise Conflict("you are not registered", code="not_registered")
            if state.status in (RaceStatus.FINISHED, RaceStatus.ABORTED):
                raise Conflict("the race is over", code="race_over")
            if _status_at(state, t) in live:  # out on the course: a DNF, not a withdrawal
                raise Conflict("the race has started", code="race_started")
            return [RunnerWithdrew(rid, runner_id)]
        case StartCountdown(by, countdown_s):
            if state.status != RaceStatus.SCHEDULED:
                raise Conflict(f"the race is {state.status}, not scheduled", code="bad_race_state")
            if not MIN_COUNTDOWN_S <= countdown_s <= MAX_COUNTDOWN_S:
                raise InvalidCommand("a countdown lasts 3 to 600 seconds")
            return [CountdownStarted(rid, round(t + countdown_s, 3), by)]
        case Pause(by):
            if _status_at(state, t) != RaceStatus.RUNNING:
                raise Conflict("only a running race can be paused", code="bad_race_state")
            return [RacePaused(rid, t, by)]
        case Resume(by):
            if state.status != RaceStatus.PAUSED or state.paused_at is None:
                raise Conflict("the race is not paused", code="bad_race_state")
            return [RaceResumed(rid, t, round(t - state.paused_at, 3), by)]
        case Abort(by, reason):
            if state.status in (RaceStatus.FINISHED, RaceStatus.ABORTED):
                raise Conflict("the race is over", code="race_over")
            return [RaceAborted(rid, t, by, reason.strip()[:500] or "aborted")]
        case Disqualify(by, runner_id, reason):
            if runner_id not in state.registered_set:
                raise InvalidCommand("that runner is not in this race", code="not_registered")
            if runner_id in state.disqualified:
                raise Conflict("already disqualified", code="already_disqualified")
            if not reason.strip():
                raise InvalidCommand("a disqualification needs a reason")
            return [RunnerDisqualified(rid, runner_id, by, reason.strip()[:500])]
        case Retire(runner_id):
            if runner_id not in state.registered_set:
                raise Conflict("you are not registered", code="not_registered")
            if _status_at(state, t) not in live:
                raise Conflict("the race is not running", code="bad_race_state")
            if runner_id in state.finished or runner_id in state.disqualified:
                raise Conflict("you are no longer racing", code="not_racing")
            if runner_id in state.retired:
                raise Conflict("you have already retired", code="already_retired")
            return [RunnerRetired(rid, runner_id, t)]
        case Finish(runner_id, time_s, distance_m, verdict):
            if _status_at(state, t) not in live:
                raise Conflict("the race is not running", code="bad_race_state")
            if runner_id not in state.registered_set:
                raise Forbidden("only registered runners finish")
            if (
                runner_id in state.finished
                or runner_id in state.disqualified
                or runner_id in state.retired
            ):
                return []  # a repeated finish (a resent fix) changes nothing
            codes = [f.code for f in verdict.flags]
            return [
                RunnerFinished(
                    rid,
                    runner_id,
                    round(time_s, 3),
                    round(distance_m, 2),
                    verdict.status,
                    verdict.score,
                    codes,
                    [f.to_dict() for f in verdict.flags],
                )
            ]
        case StoreFixes(runner_id, chunk, first_seq, last_seq, count):
            if runner_id not in state.registered_set:
                raise Forbidden("only registered runners send fixes")
            return [FixesStored(rid, runner_id, chunk, first_seq, last_seq, count)]
        case StoreFixesBatch(chunks):
            if not chunks:
                return []
            registered = state.registered_set
            if any(c.runner_id not in registered for c in chunks):
                raise Forbidden("only registered runners send fixes")
            return [
                FixesBatchStored(
                    rid,
                    [
                        {
                            "runner_id": c.runner_id,
                            "chunk": c.chunk,
                            "first_seq": c.first_seq,
                            "last_seq": c.last_seq,
                            "count": c.count,
                        }
                        for c in chunks
                    ],
                )
            ]
        case Close(by):
            if state.status in (RaceStatus.FINISHED, RaceStatus.ABORTED):
                raise Conflict("the race is over", code="race_over")
            if _status_at(state, t) not in live:
                raise Conflict("only a started race can be closed", code="bad_race_state")
            published = results(state)
            in_review = [r["runner_id"] for r in published if r["status"] == "review"]
            return [
                RaceFinished(rid, t, published),
                *(_sent_to_review(state, state.finished[r]) for r in in_review),
            ]
        case ReviewFinish():
            return [_review_finish(state, command)]
    raise InvalidCommand("unknown race command")


def _edit(state: RaceState, cmd: EditRace) -> list[RaceEvent]:
    if state.status != RaceStatus.SCHEDULED:
        raise Conflict("a race is edited before its countdown", code="bad_race_state")
    changes: dict[str, Any] = {}
    if cmd.title is not None and cmd.title.strip() != state.title:
        if not 3 <= len(cmd.title.strip()) <= 80:
            raise InvalidCommand("a title is 3 to 80 characters")
        changes["title"] = cmd.title.strip()
    if cmd.scheduled_at is not None and cmd.scheduled_at.timestamp() != state.scheduled_at:
        changes["scheduled_at"] = cmd.scheduled_at.timestamp()
    if cmd.capacity is not None and cmd.capacity != state.capacity:
        if not 1 <= cmd.capacity <= MAX_CAPACITY:
            raise InvalidCommand(f"capacity is 1 to {MAX_CAPACITY}")
        if cmd.capacity < len(state.registered):
            raise Conflict(
                f"{len(state.registered)} runners are registered: capacity cannot go below",
                code="capacity_below_registered",
            )
        changes["capacity"] = cmd.capacity
    if cmd.cutoff_s is not None and cmd.cutoff_s != state.cutoff_s:
        if not MIN_CUTOFF_S <= cmd.cutoff_s <= MAX_CUTOFF_S:
            raise InvalidCommand(
                f"a cutoff is {MIN_CUTOFF_S:g} s to {MAX_CUTOFF_S:g} s after the gun",
                code="bad_cutoff",
            )
        changes["cutoff_s"] = float(cmd.cutoff_s)
    if cmd.auto_start is not None and cmd.auto_start != state.auto_start:
        changes["auto_start"] = cmd.auto_start
    return [RaceEdited(state.race_id, cmd.by, changes)] if changes else []


def _sent_to_review(state: RaceState, r: Result) -> RaceFinishSentToReview:
    return RaceFinishSentToReview(
        state.race_id, r.runner_id, r.time_s, r.distance_m, r.score, [dict(f) for f in r.flags]
    )


def _review_finish(state: RaceState, cmd: ReviewFinish) -> RaceFinishApproved | RaceFinishRejected:
    if state.status != RaceStatus.FINISHED:
        raise Conflict("finishes are reviewed once the results are out", code="bad_race_state")
    reason = cmd.reason.strip()[:500]
    if not reason:
        raise InvalidCommand("a moderator decision needs a reason")
    if cmd.runner_id in state.disqualified:
        raise Conflict("that runner is disqualified", code="already_disqualified")
    result = state.finished.get(cmd.runner_id)
    if result is None or not result.reviewable:
        raise Conflict("that runner has no finish in review", code="not_in_review")
    approve = cmd.decision == FinishDecision.APPROVE
    status = "verified" if approve else "rejected"
    if result.status == status:
        raise Conflict(f"the finish is already {status}", code=f"already_{status}")
    after = replace(
        state, finished={**state.finished, cmd.runner_id: replace(result, status=status)}
    )
    kind = RaceFinishApproved if approve else RaceFinishRejected
    return kind(state.race_id, cmd.runner_id, cmd.by, reason, results(after))


def _status_at(state: RaceState, t: float) -> RaceStatus:
    """COUNTDOWN turns into RUNNING at the gun without an event."""
    if state.status == RaceStatus.COUNTDOWN and state.start_at is not None and t >= state.start_at:
        return RaceStatus.RUNNING
    return state.status


def status_at(state: RaceState, t: float) -> RaceStatus:
    """The race's status at time `t` (Unix seconds)."""
    return _status_at(state, t)


def cutoff_at(state: RaceState, t: float) -> float | None:
    """When the race closes by itself, as known at `t`: the gun + the cutoff + every pause so
    far (a pause stops the clock). None: not started, or no cutoff (older races)."""
    if state.start_at is None or state.cutoff_s is None:
        return None
    paused = state.paused_s + (max(0.0, t - state.paused_at) if state.paused_at is not None else 0)
    return state.start_at + state.cutoff_s + paused


#: An auto-start race's countdown starts this long before its time, at the latest; a race found
#: more than `AUTO_START_LATE_S` past its time (the servers were down) waits for its organiser.
AUTO_START_LEAD_S, AUTO_START_LATE_S = 120.0, 900.0


def auto_start_due(state: RaceState, t: float) -> StartCountdown | None:
    """The countdown an auto-start race needs at `t`, for a gun at its scheduled time (or in
    3 s when that is sooner); None when it is not one, not yet, too late, or already going."""
    if not state.auto_start or state.status != RaceStatus.SCHEDULED:
        return None
    ahead = state.scheduled_at - t
    if ahead > AUTO_START_LEAD_S or ahead < -AUTO_START_LATE_S:
        return None
    return StartCountdown("scheduler", min(MAX_COUNTDOWN_S, max(MIN_COUNTDOWN_S, ahead)))


def course_of(state: RaceState) -> Course | None:
    return Course.from_dict(state.course) if state.course is not None else None


def _schedule(state: RaceState, cmd: ScheduleRace) -> RaceScheduled:
    if state.status != RaceStatus.NONE:
        raise Conflict("this race already exists", code="race_exists")
    if not 3 <= len(cmd.title.strip()) <= 80:
        raise InvalidCommand("a title is 3 to 80 characters")
    if not MIN_DISTANCE_M <= cmd.distance_m <= MAX_DISTANCE_M:
        raise InvalidCommand(f"a race is {MIN_DISTANCE_M:g} m to {MAX_DISTANCE_M:g} m long")
    if not 1 <= cmd.capacity <= MAX_CAPACITY:
        raise InvalidCommand(f"capacity is 1 to {MAX_CAPACITY}")
    cutoff = default_cutoff_s(cmd.distance_m) if cmd.cutoff_s is None else float(cmd.cutoff_s)
    if not MIN_CUTOFF_S <= cutoff <= MAX_CUTOFF_S:
        raise InvalidCommand(
            f"a cutoff is {MIN_CUTOFF_S:g} s to {MAX_CUTOFF_S:g} s after the gun", code="bad_cutoff"
        )
    if cmd.course is not None:
        length = CourseLine(cmd.course).length_m
        if length + 0.5 < cmd.distance_m:
            raise InvalidCommand(
                f"the course line is {length:,.0f} m long, shorter than the race "
                f"({cmd.distance_m:,.0f} m): the finish is that far along it",
                code="bad_course",
            )
    return RaceScheduled(
        cmd.race_id,
        cmd.title.strip(),
        float(cmd.distance_m),
        cmd.scheduled_at.timestamp(),
        cmd.capacity,
        cmd.organiser_id,
        cmd.club_id,
        cmd.open,
        cmd.course.to_dict() if cmd.course is not None else None,
        cutoff,
        cmd.auto_start,
    )


def results(state: RaceState) -> list[dict[str, Any]]:
    """Final results: verified and reviewed finishers by time, then DNF and DQ (no place)."""
    ranked = sorted(
        (
            r
            for r in state.finished.values()
            if r.status != "rejected" and r.runner_id not in state.disqualified
        ),
        key=lambda r: (r.time_s, r.runner_id),
    )
    out: list[dict[str, Any]] = [
        {
            "place": i,
            "runner_id": r.runner_id,
            "time_s": r.time_s,
            "distance_m": r.distance_m,
            "status": "finished" if r.status == "verified" else "review",
        }
        for i, r in enumerate(ranked, start=1)
    ]
    placed = {r["runner_id"] for r in out}
    for runner_id in state.registered:
        if runner_id in placed:
            continue
        if runner_id in state.disqualified:
            status = "dq"
        elif runner_id in state.finished:
            status = "dq"  # failed the pace check at the finish
        else:
            status = "dnf"
        out.append(
            {
                "place": None,
                "runner_id": runner_id,
                "time_s": None,
                "distance_m": None,
                "status": status,
            }
        )
    return out


def evolve(state: RaceState, evt: RaceEvent) -> RaceState:
    """Apply one event to a race's state."""
    match evt:
        case RaceScheduled():
            return RaceState(
                status=RaceStatus.SCHEDULED,
                race_id=evt.race_id,
                title=evt.title,
                distance_m=evt.distance_m,
                scheduled_at=evt.scheduled_at,
                capacity=evt.capacity,
                organiser_id=evt.organiser_id,
                club_id=evt.club_id,
                open=evt.open,
                course=evt.course,
                cutoff_s=evt.cutoff_s,
                auto_start=evt.auto_start,
            )
        case RaceEdited():
            known = ("title", "scheduled_at", "capacity", "cutoff_s", "auto_start")
            return replace(state, **{k: v for k, v in evt.changes.items() if k in known})
        case RunnerRegistered():
            return replace(
                state,
                registered=(*state.registered, evt.runner_id),
                registered_set=state.registered_set | {evt.runner_id},
            )
        case RunnerWithdrew():
            return replace(
                state,
                registered=tuple(r for r in state.registered if r != evt.runner_id),
                registered_set=state.registered_set - {evt.runner_id},
            )
        case CountdownStarted():
            return replace(state, status=RaceStatus.COUNTDOWN, start_at=evt.start_at)
        case RacePaused():
            return replace(state, status=RaceStatus.PAUSED, paused_at=evt.at)
        case RaceResumed():
            pauses = state.pauses
            if state.paused_at is not None:
                pauses = (*pauses, (state.paused_at, evt.at))
            return replace(
                state,
                status=RaceStatus.RUNNING,
                paused_at=None,
                paused_s=state.paused_s + evt.paused_s,
                pauses=pauses,
            )
        case RaceAborted():
            return replace(state, status=RaceStatus.ABORTED)
        case RunnerDisqualified():
            after = replace(state, disqualified={**state.disqualified, evt.runner_id: evt.reason})
            if state.status == RaceStatus.FINISHED:  # a late DQ re-ranks the published results
                return replace(after, results=tuple(results(after)))
            return after
        case RunnerRetired():
            return replace(state, retired=state.retired | {evt.runner_id})
        case RunnerFinished():
            result = Result(
                evt.runner_id,
                evt.time_s,
                evt.distance_m,
                evt.status,
                evt.score,
                tuple(evt.codes),
                tuple(evt.flags),
                reviewable=evt.status == "review",
            )
            return replace(state, finished={**state.finished, evt.runner_id: result})
        case RaceFinishApproved() | RaceFinishRejected():
            status = "verified" if isinstance(evt, RaceFinishApproved) else "rejected"
            finished = dict(state.finished)
            if evt.runner_id in finished:
                finished[evt.runner_id] = replace(finished[evt.runner_id], status=status)
            return replace(state, finished=finished, results=tuple(evt.results))
        case FixesStored():
            return replace(state, chunks={**state.chunks, evt.runner_id: evt.last_seq})
        case FixesBatchStored():
            chunks = dict(state.chunks)
            for c in evt.chunks:
                chunks[c["runner_id"]] = c["last_seq"]
            return replace(state, chunks=chunks)
        case RaceFinished():
            return replace(state, status=RaceStatus.FINISHED, results=tuple(evt.results))
    return state


# The live engine


@dataclass(frozen=True, slots=True)
class Standing:
    rank: int
    runner_id: str
    distance_m: float
    time_s: float | None  # finish time once finished
    status: str  # running / finished / review / dq / dnf


@dataclass(frozen=True, slots=True)
class FixOutcome:
    flags: list[Flag]
    finish: Finish | None
    distance_m: float
    #: The line was crossed by a runner whose fixes the engine does not keep (`keep_fixes`):
    #: the caller runs the verdict on the stored ones (`RaceLive.verdict_from`), then `finish`.
    crossing: Crossing | None = None


@dataclass(frozen=True, slots=True)
class Crossing:
    """A runner crossed the line; the verdict is still to run, on their first `fixes` fixes of
    the race (fixes before the gun are not counted), at `now`."""

    runner_id: str
    time_s: float
    fixes: int
    now: float


class FixesMissing(ValueError):
    """Fewer of a runner's fixes are stored than crossed the line: their finish cannot be
    verified. `flag` tells the race's moderators, who decide (disqualify them, or close the
    race: they are then dnf)."""

    def __init__(self, crossing: Crossing, stored: int) -> None:
        super().__init__(f"{crossing.fixes} fixes crossed the line, {stored} are stored")
        self.crossing = crossing
        self.stored = stored

    def flag(self) -> Flag:
        return Flag(
            "finish_unverified",
            f"crossed the line after {self.crossing.fixes} fixes but only {self.stored} are "
            "stored: the finish cannot be verified and is not counted",
            0,
            False,
            {
                "fixes": self.crossing.fixes,
                "stored": self.stored,
                "time_s": round(self.crossing.time_s, 3),
            },
        )


@dataclass(slots=True)
class _Runner:
    check: LiveCheck
    distance_m: float = 0.0  # credited, up to the race distance
    last_t: float = 0.0
    reached_t: float = 0.0  # when the current distance was reached (ties)
    finish: Finish | None = None
    crossing: Crossing | None = None  # crossed, the verdict still to come (`keep_fixes=False`)
    dq: bool = False
    out: bool = False  # retired: no longer racing (DNF)
    progress_m: float = 0.0  # free route: the check's distance; course: the furthest along
    paused_m: float = 0.0  # of `progress_m`, what was made while the race was paused
    along_m: float = 0.0  # course: where on the line the runner was last seen
    off_since: float | None = None  # course: off the line since (first fix beyond tolerance)
    off_flagged: bool = False


class RaceLive:
    """Live state of one running race: a pace check per runner, finishes, standings.

    Fed fixes in arrival order per runner; finish time = interpolated crossing time - gun - pauses.
    """

    def __init__(
        self,
        distance_m: float,
        start_at: float,
        policy: PacePolicy | None = None,
        *,
        float32_extras: bool = False,
        keep_fixes: bool = True,
    ) -> None:
        """`float32_extras`: every fix's extras are float32 values (`LiveCheck`).
        `keep_fixes=False`: no runner's fixes are kept (a race room stores them as they come);
        a runner crossing the line is then a `FixOutcome.crossing`, and their `Finish` comes
        from `finish(crossing, verdict_from(crossing, their stored fixes))`."""
        self.distance_m = distance_m
        self.float32_extras = float32_extras
        self.keep_fixes = keep_fixes
        self.start_at = start_at
        self.policy = policy or policy_for(Activity.RACE)
        self.paused_s = 0.0
        self.paused_at: float | None = None
        self.pauses: list[tuple[float, float]] = []  # past pauses: (paused at, resumed at)
        self.course: CourseLine | None = None
        self._runners: dict[str, _Runner] = {}
        self._seen_registered: tuple[str, ...] | None = None

    @classmethod
    def of(cls, state: RaceState, policy: PacePolicy | None = None, **kw: Any) -> RaceLive:
        """The live engine of a started race, as its state stands (course, pauses, DQs,
        retirements); `kw` as for the constructor."""
        assert state.start_at is not None
        live = cls(state.distance_m, state.start_at, policy, **kw)
        course = course_of(state)
        live.course = CourseLine(course) if course is not None else None
        live.paused_s = state.paused_s
        live.paused_at = state.paused_at
        live.pauses = list(state.pauses)
        for runner_id in state.disqualified:
            live.disqualify(runner_id)
        for runner_id in state.retired:
            live.retire(runner_id)
        return live

    def pause(self, at: float) -> None:
        self.paused_at = at

    def resume(self, at: float, paused_s: float) -> None:
        """The race goes on at `at`; `paused_s`: every pause so far, in seconds."""
        if self.paused_at is not None:
            self.pauses.append((self.paused_at, at))
        self.paused_at = None
        self.paused_s = paused_s

    def _paused(self, t: float) -> bool:
        if self.paused_at is not None and t >= self.paused_at:
            return True
        return any(a <= t < b for a, b in self.pauses)

    def _runner(self, runner_id: str) -> _Runner:
        r = self._runners.get(runner_id)
        if r is None:
            check = LiveCheck(
                self.policy, float32_extras=self.float32_extras, keep_fixes=self.keep_fixes
            )
            r = self._runners[runner_id] = _Runner(check)
        return r

    def add_fix(self, runner_id: str, fix: Fix, now: float) -> FixOutcome:
        """Take one fix of a runner; returns live flags and a finish when the line is crossed."""
        r = self._runner(runner_id)
        if fix.t < self.start_at:  # warming up before the gun earns nothing
            return FixOutcome([], None, r.distance_m)
        before_t = r.last_t
        before_m = r.progress_m - r.paused_m
        flags = r.check.add(fix, now)
        progress = r.check.distance_m if self.course is None else self._along(r, fix, flags)
        if progress > r.progress_m:
            if self._paused(fix.t):  # moving on while paused earns nothing
                paused_before = r.paused_m
                r.paused_m += progress - r.progress_m
                if paused_before < PAUSE_GAIN_FLAG_M <= r.paused_m:
                    flags.append(
                        Flag(
                            "moved_while_paused",
                            f"moved {r.paused_m:.0f} m on while the race was paused (not credited)",
                            0,
                            False,
                            {"distance_m": round(r.paused_m, 1), "t": fix.t},
                        )
                    )
            r.progress_m = progress
        after_m = r.progress_m - r.paused_m
        if after_m > before_m:
            r.reached_t = fix.t
        r.last_t = max(r.last_t, fix.t)
        r.distance_m = min(after_m, self.distance_m)
        if (
            r.finish is None
            and r.crossing is None
            and not r.dq
            and not r.out
            and after_m >= self.distance_m
            and fix.t >= self.start_at
        ):
            share = (
                (self.distance_m - before_m) / (after_m - before_m) if after_m > before_m else 1.0
            )
            t0 = before_t if before_t > 0 else fix.t
            crossed = t0 + max(0.0, min(1.0, share)) * (fix.t - t0)
            time_s = max(0.0, crossed - self.start_at - self.paused_s)
            if not self.keep_fixes:
                r.crossing = Crossing(runner_id, time_s, r.check.fixes_added, now)
                return FixOutcome(flags, None, r.distance_m, r.crossing)
            r.finish = Finish(runner_id, time_s, self.distance_m, r.check.verdict(now))
            return FixOutcome(flags, r.finish, r.distance_m)
        return FixOutcome(flags, None, r.distance_m)

    def _along(self, r: _Runner, fix: Fix, flags: list[Flag]) -> float:
        """Course progress after `fix`: the furthest along the line reached within its
        tolerance (`game.course`); off the line for `OFF_COURSE_S`, an `off_course` flag."""
        line = self.course
        assert line is not None
        lat, lon, acc = fix.lat, fix.lon, fix.acc_m
        if not (math.isfinite(lat) and math.isfinite(lon) and math.isfinite(fix.t)):
            return r.progress_m
        if acc is not None and not 0.0 < acc <= self.policy.max_acc_m:
            return r.progress_m  # too vague to place (the pace check drops it too)
        # the reach grows with the time since the runner's last fix, on the line or off it: a
        # gap in the signal may hide running along the line, fixes off it show a way round it
        last = r.last_t if r.last_t > 0.0 else self.start_at
        reach = REACH_M + COURSE_MAX_SPEED_MPS * max(0.0, fix.t - last)
        along, off = line.locate(lat, lon, r.along_m, reach)
        if off <= line.tolerance_m:
            r.along_m, r.off_since = along, None
            return max(r.progress_m, along)
        if r.off_since is None:
            r.off_since = fix.t
        elif fix.t - r.off_since >= OFF_COURSE_S and not r.off_flagged:
            r.off_flagged = True
            flags.append(
                Flag(
                    "off_course",
                    f"{off:.0f} m off the course line for {fix.t - r.off_since:.0f} s (the "
                    f"tolerance is {line.tolerance_m:g} m): no progress is credited off it",
                    0,
                    False,
                    {
                        "off_m": round(off, 1),
                        "at_m": round(r.along_m, 1),
                        "duration_s": round(fix.t - r.off_since, 1),
                        "t": fix.t,
                    },
                )
            )
        return r.progress_m

    def verdict_from(self, crossing: Crossing, fixes: Sequence[Fix]) -> Verdict:
        """The verdict of a `crossing` from the runner's stored fixes, in the order they were
        added (the fixes before the gun and after the crossing are left out): the verdict a
        check keeping its fixes gives at the crossing."""
        raced = [f for f in fixes if f.t >= self.start_at][: crossing.fixes]
        if len(raced) != crossing.fixes:
            raise FixesMissing(crossing, len(raced))
        return check_fixes(raced, self.policy, crossing.now)

    def finish(self, crossing: Crossing, verdict: Verdict) -> Finish:
        """The runner's finish, now that their verdict has run (`verdict_from`)."""
        r = self._runner(crossing.runner_id)
        r.finish = Finish(crossing.runner_id, crossing.time_s, self.distance_m, verdict)
        return r.finish

    def tick(self, now: float) -> dict[str, list[Flag]]:
        """Timer signals per runner (signal lost, no progress)."""
        out = {}
        for runner_id, r in self._runners.items():
            if r.finish is None and not r.dq and not r.out:
                flags = r.check.tick(now)
                if flags:
                    out[runner_id] = flags
        return out

    def disqualify(self, runner_id: str) -> None:
        self._runner(runner_id).dq = True

    def retire(self, runner_id: str) -> None:
        self._runner(runner_id).out = True

    def verdict(self, runner_id: str, now: float) -> Verdict:
        return self._runner(runner_id).check.verdict(now)

    def ranking(self, registered: tuple[str, ...] = ()) -> list[StandingRow]:
        """The standings as plain `(rank, runner_id, distance_m, time_s, status)` tuples.

        Finishers by time, then runners by distance (first to reach it ahead), then the retired
        (DNF), then DQ. One sort of
        precomputed keys per call and no object per runner: the room builds this every tick.
        """
        if registered is not self._seen_registered:  # the roster changes rarely
            for runner_id in registered:
                if runner_id not in self._runners:
                    self._runner(runner_id)
            self._seen_registered = registered
        keyed: list[tuple[tuple[int, float, float, str], str, float, float | None, str]] = []
        append = keyed.append
        for rid, r in self._runners.items():
            fin = r.finish
            if r.dq or (fin is not None and fin.verdict.status == "rejected"):
                append(((3, 0.0, 0.0, rid), rid, round(r.distance_m, 1), None, "dq"))
            elif r.out and fin is None:
                append(((2, -r.distance_m, 0.0, rid), rid, round(r.distance_m, 1), None, "dnf"))
            elif fin is not None:
                status = "finished" if fin.verdict.status == "verified" else "review"
                append(
                    (
                        (0, fin.time_s, 0.0, rid),
                        rid,
                        round(r.distance_m, 1),
                        round(fin.time_s, 3),
                        status,
                    )
                )
            else:
                append(
                    (
                        (1, -r.distance_m, r.reached_t, rid),
                        rid,
                        round(r.distance_m, 1),
                        None,
                        "running",
                    )
                )
        keyed.sort(key=_first)  # keys are unique (they end with the runner id)
        return [(i, k[1], k[2], k[3], k[4]) for i, k in enumerate(keyed, start=1)]

    def standings(self, registered: tuple[str, ...] = ()) -> list[Standing]:
        """Finishers by time, then runners by distance (first to reach it ahead), then the retired
        (DNF), then DQ."""
        return [Standing(*row) for row in self.ranking(registered)]


#: One row of `RaceLive.ranking`: rank, runner id, distance (m), finish time (s), status.
StandingRow = tuple[int, str, float, float | None, str]


def _first(item: tuple[Any, ...]) -> Any:
    return item[0]
