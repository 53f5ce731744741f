"""The Challenge decider: official and club challenges, weekly rotation, join/leave/close.

Progress is not kept in the challenge stream: it is a read model computed from credited runs
(`RunVerified` / `RunRejected`) of the members, so a moderator's later decision moves it too.
A challenge's stream records what a challenge *is* and who is in it, and its final standings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from game.errors import Conflict, Forbidden, InvalidCommand
from game.events import event
from game.track import STANDARD_DISTANCES_M


class Kind(StrEnum):
    """What a challenge counts. `best_time` ranks lower-is-better; the others higher."""

    DISTANCE = "distance"  # target_value in metres
    TIME = "time"  # target_value in seconds of credited running
    SESSIONS = "sessions"  # target_value runs
    BEST_TIME = "best_time"  # distance_m to cover; the score is the fastest time over it
    DRILLS = "drills"  # target_value drills completed


class Scope(StrEnum):
    OFFICIAL = "official"
    CLUB = "club"


MAX_WINDOW = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class Template:
    """A weekly challenge template; the rotation cycles through these by ISO week number."""

    key: str
    title: str
    kind: Kind
    target_value: float
    description: str
    distance_m: float | None = None


WEEKLY_ROTATION: tuple[Template, ...] = (
    Template("reverse-10k", "Reverse 10", Kind.DISTANCE, 10_000, "Cover 10 km backward this week."),
    Template(
        "three-sessions", "Three Times Back", Kind.SESSIONS, 3, "Three backward runs this week."
    ),
    Template(
        "mile-backward",
        "Backward Mile",
        Kind.BEST_TIME,
        1,
        "Your fastest backward mile this week.",
        distance_m=1609.344,
    ),
    Template("hour-of-retro", "Hour of Retro", Kind.TIME, 3600, "One hour of backward running."),
    Template("drill-week", "Balance Week", Kind.DRILLS, 3, "Complete three coordination drills."),
)


# Commands


@dataclass(frozen=True, slots=True)
class CreateChallenge:
    challenge_id: str
    title: str
    kind: Kind
    target_value: float
    starts_at: datetime
    ends_at: datetime
    tz: str
    created_by: str
    scope: Scope = Scope.OFFICIAL
    club_id: str | None = None
    team_mode: bool = False
    description: str = ""
    distance_m: float | None = None
    template: str | None = None


@dataclass(frozen=True, slots=True)
class JoinChallenge:
    runner_id: str


@dataclass(frozen=True, slots=True)
class LeaveChallenge:
    runner_id: str


@dataclass(frozen=True, slots=True)
class CloseChallenge:
    """Close at or after the end; `standings` are the final ranks computed by the shell."""

    standings: list[dict[str, Any]] = field(default_factory=list)


# Events


@event("ChallengeCreated")
@dataclass(frozen=True, slots=True)
class ChallengeCreated:
    challenge_id: str
    title: str
    kind: str
    target_value: float
    starts_at: float  # Unix seconds
    ends_at: float
    tz: str
    created_by: str
    scope: str
    club_id: str | None
    team_mode: bool
    description: str
    distance_m: float | None
    template: str | None


@event("ChallengeJoined")
@dataclass(frozen=True, slots=True)
class ChallengeJoined:
    challenge_id: str
    runner_id: str
    at: float


@event("ChallengeLeft")
@dataclass(frozen=True, slots=True)
class ChallengeLeft:
    challenge_id: str
    runner_id: str
    at: float


@event("ChallengeClosed")
@dataclass(frozen=True, slots=True)
class ChallengeClosed:
    challenge_id: str
    at: float
    standings: list[dict[str, Any]]


ChallengeEvent = ChallengeCreated | ChallengeJoined | ChallengeLeft | ChallengeClosed


@dataclass(frozen=True, slots=True)
class ChallengeState:
    exists: bool = False
    challenge_id: str = ""
    starts_at: float = 0.0
    ends_at: float = 0.0
    closed: bool = False
    members: frozenset[str] = frozenset()
    club_id: str | None = None


def initial_state() -> ChallengeState:
    return ChallengeState()


Command = CreateChallenge | JoinChallenge | LeaveChallenge | CloseChallenge


def decide(state: ChallengeState, command: Command, now: datetime) -> list[ChallengeEvent]:
    """Decide a challenge command."""
    if isinstance(command, CreateChallenge):
        return [_create(state, command)]
    if not state.exists:
        raise InvalidCommand("no such challenge", code="not_found")
    t = now.timestamp()
    if isinstance(command, JoinChallenge):
        if state.closed or t >= state.ends_at:
            raise Conflict("this challenge is closed", code="challenge_closed")
        if command.runner_id in state.members:
            raise Conflict("you already joined this challenge", code="already_joined")
        return [ChallengeJoined(state.challenge_id, command.runner_id, t)]
    if isinstance(command, LeaveChallenge):
        if state.closed or t >= state.ends_at:  # the final standings are being settled
            raise Conflict("this challenge is closed", code="challenge_closed")
        if command.runner_id not in state.members:
            raise Conflict("you are not in this challenge", code="not_joined")
        return [ChallengeLeft(state.challenge_id, command.runner_id, t)]
    if state.closed:
        raise Conflict("this challenge is already closed", code="challenge_closed")
    if t < state.ends_at:
        raise Conflict("a challenge closes only after its window ends", code="challenge_running")
    return [ChallengeClosed(state.challenge_id, t, list(command.standings))]


def _create(state: ChallengeState, cmd: CreateChallenge) -> ChallengeCreated:
    if state.exists:
        raise Conflict("this challenge already exists", code="challenge_exists")
    if not 3 <= len(cmd.title.strip()) <= 80:
        raise InvalidCommand("a title is 3 to 80 characters")
    if cmd.ends_at <= cmd.starts_at:
        raise InvalidCommand("a challenge must end after it starts")
    if cmd.ends_at - cmd.starts_at > MAX_WINDOW:
        raise InvalidCommand("a challenge lasts at most a year")
    if cmd.kind == Kind.BEST_TIME:
        if distance_name(cmd.distance_m) is None:
            names = ", ".join(f"{k} ({v:g} m)" for k, v in STANDARD_DISTANCES_M.items())
            raise InvalidCommand(f"a best-time challenge runs over a standard distance: {names}")
    elif not 0 < cmd.target_value <= 1e7:
        raise InvalidCommand("target_value must be positive and sensible")
    if cmd.scope == Scope.CLUB and not cmd.club_id:
        raise InvalidCommand("a club challenge names its club")
    if cmd.team_mode and cmd.scope != Scope.OFFICIAL and not cmd.club_id:
        raise Forbidden("team mode totals clubs")
    try:
        ZoneInfo(cmd.tz)
    except (KeyError, ValueError) as exc:
        raise InvalidCommand(f"unknown time zone {cmd.tz!r}") from exc
    return ChallengeCreated(
        challenge_id=cmd.challenge_id,
        title=cmd.title.strip(),
        kind=cmd.kind.value,
        target_value=float(cmd.target_value),
        starts_at=cmd.starts_at.timestamp(),
        ends_at=cmd.ends_at.timestamp(),
        tz=cmd.tz,
        created_by=cmd.created_by,
        scope=cmd.scope.value,
        club_id=cmd.club_id,
        team_mode=cmd.team_mode,
        description=cmd.description.strip()[:500],
        distance_m=cmd.distance_m,
        template=cmd.template,
    )


def evolve(state: ChallengeState, evt: ChallengeEvent) -> ChallengeState:
    """Apply one event to a challenge's state."""
    if isinstance(evt, ChallengeCreated):
        return ChallengeState(
            exists=True,
            challenge_id=evt.challenge_id,
            starts_at=evt.starts_at,
            ends_at=evt.ends_at,
            club_id=evt.club_id,
        )
    if isinstance(evt, ChallengeJoined):
        return replace(state, members=state.members | {evt.runner_id})
    if isinstance(evt, ChallengeLeft):
        return replace(state, members=state.members - {evt.runner_id})
    return replace(state, closed=True)


# The weekly rotation


def iso_week_window(year: int, week: int, tz: tzinfo) -> tuple[datetime, datetime]:
    """Monday 00:00 to the next Monday 00:00, local time in `tz`, as aware datetimes."""
    monday = date.fromisocalendar(year, week, 1)
    start = datetime(monday.year, monday.month, monday.day, tzinfo=tz)
    nxt = monday + timedelta(days=7)
    return start, datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)


def weekly_challenge_id(year: int, week: int) -> str:
    return f"weekly-{year}-W{week:02d}"


def weekly_template(
    year: int, week: int, rotation: tuple[Template, ...] = WEEKLY_ROTATION
) -> Template:
    """The template for an ISO week: the rotation cycles by absolute week number."""
    index = (date.fromisocalendar(year, week, 1).toordinal() // 7) % len(rotation)
    return rotation[index]


def rotation_of(keys: list[str] | tuple[str, ...]) -> tuple[Template, ...]:
    """The templates named by `keys`, in that order; ValueError for an unknown or repeated key,
    or none at all."""
    by_key = {t.key: t for t in WEEKLY_ROTATION}
    unknown = [k for k in keys if k not in by_key]
    if unknown or not keys or len(set(keys)) != len(keys):
        raise ValueError(
            f"a weekly rotation names each of {sorted(by_key)} at most once, at least one "
            f"(unknown: {unknown})"
        )
    return tuple(by_key[k] for k in keys)


def weekly_challenge(
    year: int,
    week: int,
    tz: ZoneInfo,
    created_by: str = "scheduler",
    rotation: tuple[Template, ...] = WEEKLY_ROTATION,
) -> CreateChallenge:
    """The command that opens the official weekly challenge of an ISO week."""
    tpl = weekly_template(year, week, rotation)
    start, end = iso_week_window(year, week, tz)
    return CreateChallenge(
        challenge_id=weekly_challenge_id(year, week),
        title=f"{tpl.title} · week {week}",
        kind=tpl.kind,
        target_value=tpl.target_value,
        starts_at=start,
        ends_at=end,
        tz=tz.key,
        created_by=created_by,
        description=tpl.description,
        distance_m=tpl.distance_m,
        template=tpl.key,
    )


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What a challenge needs of one credited run to count it."""

    run_id: str
    ended_at: float
    distance_m: float
    elapsed_s: float
    best_time_s: float | None = None  # fastest time over the challenge distance, if covered


def progress_value(kind: Kind, runs: list[RunFacts], drills: int = 0) -> float | None:
    """A member's score in a challenge from their credited runs in its window (None: no score)."""
    if kind == Kind.DISTANCE:
        return sum(r.distance_m for r in runs)
    if kind == Kind.TIME:
        return sum(r.elapsed_s for r in runs)
    if kind == Kind.SESSIONS:
        return float(len(runs))
    if kind == Kind.DRILLS:
        return float(drills)
    times = [r.best_time_s for r in runs if r.best_time_s is not None]
    return min(times) if times else None


def distance_name(distance_m: float | None) -> str | None:
    """The standard best-effort name of a distance ("mile", "5k" ...), if it is one."""
    for name, d in STANDARD_DISTANCES_M.items():
        if distance_m is not None and abs(d - distance_m) < 0.01:
            return name
    return None


def is_complete(kind: Kind, value: float | None, target_value: float) -> bool:
    if value is None:
        return False
    if kind == Kind.BEST_TIME:
        return True  # covering the distance completes it; the time ranks it
    return value >= target_value
