"""Rewards: XP, levels, streaks and badges, recomputed from scratch from a runner's facts.

Nothing is stored incrementally: the shell gathers the runner's credited runs, podiums and drill
results and calls `compute_profile` again. A moderator reversal (a verified run later rejected)
is handled by simply leaving that run out; its XP, distance, streak days and badges drop out.

Rules, all in the runner's time zone `tz` (their current one, applied to their whole history):
- A run belongs to the local calendar day on which it *ended*. Days and ISO weeks (Monday start)
  come from local dates, never from 24 h arithmetic, so DST changes and ISO week 52/53 -> 1 work.
- Day streak: consecutive local days with at least one credited run. It is current while the
  last active day is today or yesterday (relative to `now`), otherwise 0. Week streak likewise,
  for consecutive ISO weeks. Facts dated after `now` still count (the shell passes what it holds).
- Levels: level L starts at `level_threshold_xp(L) = base·(L-1) + step·(L-1)(L-2)/2`, so level 1
  starts at 0 XP and each level costs `step` XP more than the one before (200, 250, 300 ... by
  default): quadratic in the level, gentle at first.
- Badges are earned once, at the moment their condition first became true, and listed in time
  order (ties in catalogue order), so a rebuild gives the same answer whatever the input order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from game.errors import InvalidCommand

ACTIVITIES = ("backward_run", "backward_walk", "race")


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidCommand(f"{what} must be a time-zone-aware datetime")


@dataclass(frozen=True, slots=True)
class CreditedRun:
    """A run that counts for the runner (verified, or standing while under review)."""

    run_id: str
    ended_at: datetime
    distance_m: float
    elapsed_s: float
    activity: str
    clean: bool  # verified by the pace check with no flags at all

    def __post_init__(self) -> None:
        _require_aware(self.ended_at, "ended_at")
        if self.activity not in ACTIVITIES:
            raise InvalidCommand(f"unknown activity {self.activity!r}")
        if not (math.isfinite(self.distance_m) and self.distance_m >= 0.0):
            raise InvalidCommand("distance_m must be finite and >= 0")
        if not (math.isfinite(self.elapsed_s) and self.elapsed_s >= 0.0):
            raise InvalidCommand("elapsed_s must be finite and >= 0")


@dataclass(frozen=True, slots=True)
class Podium:
    """A top-three finish in a challenge or a race."""

    source_id: str
    place: int
    at: datetime

    def __post_init__(self) -> None:
        _require_aware(self.at, "at")
        if self.place not in (1, 2, 3):
            raise InvalidCommand("podium place must be 1, 2 or 3")


@dataclass(frozen=True, slots=True)
class DrillResult:
    """The runner's result in one coordination drill."""

    drill_id: str
    at: datetime
    median_reaction_ms: float | None
    sync_score: float | None  # 0..1, 1 = perfectly in step with the cues

    def __post_init__(self) -> None:
        _require_aware(self.at, "at")
        if self.median_reaction_ms is not None and not self.median_reaction_ms >= 0.0:
            raise InvalidCommand("median_reaction_ms must be >= 0")
        if self.sync_score is not None and not 0.0 <= self.sync_score <= 1.0:
            raise InvalidCommand("sync_score must be within 0..1")


@dataclass(frozen=True, slots=True)
class RewardsPolicy:
    """Every reward number in one place."""

    xp_per_km: float = 100.0
    # Backward running costs ~35% more energy than forward (Wright & Weyand 2001; Pavei 2020).
    effort_factor_run: float = 1.35  # backward_run and race
    effort_factor_walk: float = 1.15  # backward_walk: real effort, below running
    xp_per_drill: int = 10
    xp_podium_first: int = 50
    xp_podium_second: int = 30
    xp_podium_third: int = 20
    level_base_xp: int = 200  # cost of level 1 -> 2
    level_step_xp: int = 50  # each further level costs this much more
    early_bird_from_hour: int = 4  # early_bird: run ends in [04:00, 07:00) local
    early_bird_before_hour: int = 7
    night_owl_from_hour: int = 21  # night_owl: run ends in [21:00, 04:00) local
    night_owl_before_hour: int = 4
    clean_record_runs: int = 10
    balance_master_drills: int = 10
    in_sync_score: float = 0.9
    quick_reflexes_ms: float = 300.0
    century_m: float = 100_000.0

    def effort_factor(self, activity: str) -> float:
        """The effort weight of one activity."""
        if activity in ("backward_run", "race"):
            return self.effort_factor_run
        if activity == "backward_walk":
            return self.effort_factor_walk
        raise InvalidCommand(f"unknown activity {activity!r}")

    def podium_xp(self, place: int) -> int:
        """The XP bonus for a podium place."""
        return {1: self.xp_podium_first, 2: self.xp_podium_second}.get(place, self.xp_podium_third)


DEFAULT_POLICY = RewardsPolicy()


@dataclass(frozen=True, slots=True)
class Badge:
    """An earned badge."""

    code: str
    name: str
    description: str
    earned_at: datetime


@dataclass(frozen=True, slots=True)
class Profile:
    """A runner's rewards as of `now`."""

    xp: int
    level: int
    xp_into_level: int  # XP earned since the current level started
    xp_for_next_level: int  # XP the current level spans (progress = xp_into_level / this)
    total_distance_m: float
    total_runs: int
    day_streak: int
    best_day_streak: int
    week_streak: int
    best_week_streak: int
    badges: tuple[Badge, ...]


# code -> (name, description). The order here breaks ties between badges earned at one instant.
BADGES: dict[str, tuple[str, str]] = {
    "first_backward_km": ("First Backward Kilometre", "A credited run of 1 km or more."),
    "first_5k": ("Reverse 5K", "A credited run of 5 km or more."),
    "first_10k": ("Reverse 10K", "A credited run of 10 km or more."),
    "half_marathon": ("Half Marathon, Backwards", "A credited run of 21.0975 km or more."),
    "marathon": ("Marathon, Backwards", "A credited run of 42.195 km or more."),
    "day_streak_7": ("Seven Days in Reverse", "Credited runs on 7 consecutive local days."),
    "week_streak_2": ("Two-Week Streak", "Credited runs in 2 consecutive ISO weeks."),
    "week_streak_4": ("Four-Week Streak", "Credited runs in 4 consecutive ISO weeks."),
    "week_streak_12": ("Twelve-Week Streak", "Credited runs in 12 consecutive ISO weeks."),
    "clean_record": ("Clean Record", "10 consecutive credited runs with no pace flag."),
    "early_bird": ("Early Bird", "A credited run ending between 04:00 and 07:00 local time."),
    "night_owl": ("Night Owl", "A credited run ending between 21:00 and 04:00 local time."),
    "century": ("Century", "100 km of credited distance in total."),
    "challenge_podium": ("On the Podium", "A top-three place in a challenge or race."),
    "balance_master": ("Balance Master", "10 coordination drills completed."),
    "in_sync": ("In Sync", "A drill sync score of 0.9 or better."),
    "quick_reflexes": ("Quick Reflexes", "A drill median reaction time of 300 ms or less."),
}

_DISTANCE_BADGES = (
    ("first_backward_km", 1_000.0),
    ("first_5k", 5_000.0),
    ("first_10k", 10_000.0),
    ("half_marathon", 21_097.5),
    ("marathon", 42_195.0),
)
_WEEK_STREAK_BADGES = (("week_streak_2", 2), ("week_streak_4", 4), ("week_streak_12", 12))
_DAY_STREAK_BADGES = (("day_streak_7", 7),)


def xp_for_run(distance_m: float, activity: str, policy: RewardsPolicy = DEFAULT_POLICY) -> int:
    """XP for one credited run: km * XP per km * effort factor, rounded half up."""
    if not (math.isfinite(distance_m) and distance_m >= 0.0):
        raise InvalidCommand("distance_m must be finite and >= 0")
    return math.floor(distance_m / 1000.0 * policy.xp_per_km * policy.effort_factor(activity) + 0.5)


def level_threshold_xp(level: int, policy: RewardsPolicy = DEFAULT_POLICY) -> int:
    """Total XP at which `level` starts (level 1 starts at 0)."""
    if level < 1:
        raise InvalidCommand("levels start at 1")
    n = level - 1
    return policy.level_base_xp * n + policy.level_step_xp * n * (n - 1) // 2


def level_for_xp(xp: int, policy: RewardsPolicy = DEFAULT_POLICY) -> int:
    """The level a runner with `xp` total XP has reached."""
    if xp < 0:
        raise InvalidCommand("xp must be >= 0")
    base, step = policy.level_base_xp, policy.level_step_xp
    if base <= 0 or step < 0:
        raise InvalidCommand("level_base_xp must be > 0 and level_step_xp >= 0")
    # Solve step/2·n² + (base - step/2)·n = xp for n = level - 1, then correct float error.
    if step == 0:
        n = xp // base
    else:
        b = base - step / 2.0
        n = max(0, int((-b + math.sqrt(b * b + 2.0 * step * xp)) / step))
    while level_threshold_xp(n + 2, policy) <= xp:
        n += 1
    while n > 0 and level_threshold_xp(n + 1, policy) > xp:
        n -= 1
    return n + 1


_Fact = TypeVar("_Fact", CreditedRun, Podium, DrillResult)


def _unique(items: Iterable[_Fact], key: str) -> list[_Fact]:
    """Collapse exact duplicates (re-delivered facts); conflicting ones are a bug upstream."""
    seen: dict[str, _Fact] = {}
    for item in items:
        ident: str = getattr(item, key)
        if ident in seen and seen[ident] != item:
            raise InvalidCommand(f"two different facts share {key} {ident!r}")
        seen[ident] = item
    return list(seen.values())


def _week_index(day: date) -> int:
    """Consecutive ISO weeks get consecutive numbers (0001-01-01 was a Monday)."""
    return (day.toordinal() - 1) // 7


class _Streak:
    """A streak over consecutive period numbers, fed in non-decreasing order."""

    __slots__ = ("best", "last", "length")

    def __init__(self) -> None:
        self.last: int | None = None
        self.length = 0
        self.best = 0

    def add(self, period: int) -> int:
        if period != self.last:
            self.length = self.length + 1 if self.last == period - 1 else 1
            self.last = period
            self.best = max(self.best, self.length)
        return self.length

    def current(self, this_period: int) -> int:
        return self.length if self.last is not None and self.last >= this_period - 1 else 0


def _in_hours(hour: int, start: int, end: int) -> bool:
    """Whether `hour` lies in [start, end), wrapping past midnight when end < start."""
    return start <= hour < end if start <= end else hour >= start or hour < end


def compute_profile(
    runs: Iterable[CreditedRun],
    podiums: Iterable[Podium],
    drills: Iterable[DrillResult],
    tz: ZoneInfo,
    now: datetime,
    policy: RewardsPolicy = DEFAULT_POLICY,
) -> Profile:
    """The runner's XP, level, streaks and badges, recomputed from their credited facts."""
    _require_aware(now, "now")
    ordered_runs = sorted(_unique(runs, "run_id"), key=lambda r: (r.ended_at, r.run_id))
    ordered_podiums = sorted(_unique(podiums, "source_id"), key=lambda p: (p.at, p.source_id))
    ordered_drills = sorted(_unique(drills, "drill_id"), key=lambda d: (d.at, d.drill_id))

    earned: dict[str, datetime] = {}

    def award(code: str, at: datetime) -> None:
        earned.setdefault(code, at)  # inputs are walked in time order: the first one wins

    days, weeks = _Streak(), _Streak()
    run_xp = 0
    distance_m = 0.0
    clean_in_a_row = 0
    for run in ordered_runs:
        at = run.ended_at
        local = at.astimezone(tz)
        run_xp += xp_for_run(run.distance_m, run.activity, policy)
        distance_m += run.distance_m
        for code, min_m in _DISTANCE_BADGES:
            if run.distance_m >= min_m:
                award(code, at)
        if distance_m >= policy.century_m:
            award("century", at)
        day_streak = days.add(local.date().toordinal())
        for code, length in _DAY_STREAK_BADGES:
            if day_streak >= length:
                award(code, at)
        week_streak = weeks.add(_week_index(local.date()))
        for code, length in _WEEK_STREAK_BADGES:
            if week_streak >= length:
                award(code, at)
        # A flagged run that still counts breaks the chain; a rejected one is absent entirely.
        clean_in_a_row = clean_in_a_row + 1 if run.clean else 0
        if clean_in_a_row >= policy.clean_record_runs:
            award("clean_record", at)
        if _in_hours(local.hour, policy.early_bird_from_hour, policy.early_bird_before_hour):
            award("early_bird", at)
        if _in_hours(local.hour, policy.night_owl_from_hour, policy.night_owl_before_hour):
            award("night_owl", at)

    for podium in ordered_podiums:
        award("challenge_podium", podium.at)

    for count, drill in enumerate(ordered_drills, start=1):
        if count >= policy.balance_master_drills:
            award("balance_master", drill.at)
        if drill.sync_score is not None and drill.sync_score >= policy.in_sync_score:
            award("in_sync", drill.at)
        reaction_ms = drill.median_reaction_ms
        if reaction_ms is not None and reaction_ms <= policy.quick_reflexes_ms:
            award("quick_reflexes", drill.at)

    xp = (
        run_xp
        + policy.xp_per_drill * len(ordered_drills)
        + sum(policy.podium_xp(p.place) for p in ordered_podiums)
    )
    level = level_for_xp(xp, policy)
    level_start_xp = level_threshold_xp(level, policy)
    today = now.astimezone(tz).date()
    return Profile(
        xp=xp,
        level=level,
        xp_into_level=xp - level_start_xp,
        xp_for_next_level=level_threshold_xp(level + 1, policy) - level_start_xp,
        total_distance_m=math.fsum(r.distance_m for r in ordered_runs),
        total_runs=len(ordered_runs),
        day_streak=days.current(today.toordinal()),
        best_day_streak=days.best,
        week_streak=weeks.current(_week_index(today)),
        best_week_streak=weeks.best,
        badges=_badges(earned),
    )


def _badges(earned: dict[str, datetime]) -> tuple[Badge, ...]:
    order = {code: i for i, code in enumerate(BADGES)}
    codes: Sequence[str] = sorted(earned, key=lambda c: (earned[c], order[c]))
    return tuple(Badge(c, BADGES[c][0], BADGES[c][1], earned[c]) for c in codes)
