"""Rewards: XP weighting, levels, streaks in the runner's time zone, badges at the right moment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from game.errors import InvalidCommand
from game.rewards import (
    BADGES,
    CreditedRun,
    DrillResult,
    Podium,
    Profile,
    RewardsPolicy,
    compute_profile,
    level_for_xp,
    level_threshold_xp,
    xp_for_run,
)

BERLIN = ZoneInfo("Europe/Berlin")
UTC_ZONE = ZoneInfo("UTC")


def local(y: int, mo: int, d: int, h: int = 12, mi: int = 0, tz: ZoneInfo = BERLIN) -> datetime:
    """A wall-clock time in `tz`, as an aware UTC datetime."""
    return datetime(y, mo, d, h, mi, tzinfo=tz).astimezone(UTC)


def run(
    at: datetime,
    distance_m: float = 3_000.0,
    *,
    activity: str = "backward_run",
    clean: bool = True,
    run_id: str | None = None,
) -> CreditedRun:
    rid = run_id if run_id is not None else f"run-{at.isoformat()}"
    return CreditedRun(rid, at, distance_m, distance_m / 2.5, activity, clean)


def drill(
    at: datetime, *, reaction_ms: float | None = None, sync: float | None = None, i: int = 0
) -> DrillResult:
    return DrillResult(f"drill-{at.isoformat()}-{i}", at, reaction_ms, sync)


def profile(
    runs: list[CreditedRun] | tuple[CreditedRun, ...] = (),
    podiums: list[Podium] | tuple[Podium, ...] = (),
    drills: list[DrillResult] | tuple[DrillResult, ...] = (),
    *,
    tz: ZoneInfo = BERLIN,
    now: datetime | None = None,
) -> Profile:
    if now is None:
        stamps = [r.ended_at for r in runs] + [p.at for p in podiums] + [d.at for d in drills]
        now = max(stamps, default=local(2024, 1, 1))
    return compute_profile(runs, podiums, drills, tz, now)


def earned(p: Profile) -> dict[str, datetime]:
    return {b.code: b.earned_at for b in p.badges}


def daily(start: datetime, n: int, distance_m: float = 3_000.0) -> list[CreditedRun]:
    return [run(start + timedelta(days=i), distance_m) for i in range(n)]


# --- XP -----------------------------------------------------------------------------------------


def test_xp_for_run_weights_backward_effort() -> None:
    assert xp_for_run(1_000.0, "backward_run") == 135
    assert xp_for_run(1_000.0, "race") == 135
    assert xp_for_run(1_000.0, "backward_walk") == 115
    assert xp_for_run(5_000.0, "backward_run") == 675
    assert xp_for_run(0.0, "backward_walk") == 0
    assert xp_for_run(1_000.0, "backward_run", RewardsPolicy(effort_factor_run=1.0)) == 100


def test_xp_for_run_refuses_unknown_activity_and_negative_distance() -> None:
    with pytest.raises(InvalidCommand):
        xp_for_run(1_000.0, "forward_run")
    with pytest.raises(InvalidCommand):
        xp_for_run(-1.0, "backward_run")


def test_profile_xp_sums_runs_drills_and_podium_places() -> None:
    t = local(2024, 5, 6)
    p = profile(
        [run(t, 1_000.0), run(t + timedelta(hours=1), 1_000.0, activity="backward_walk")],
        [Podium("c1", 1, t), Podium("c2", 3, t)],
        [drill(t, i=1), drill(t, i=2)],
    )
    assert p.xp == 135 + 115 + 50 + 20 + 2 * 10
    assert p.total_runs == 2
    assert p.total_distance_m == 2_000.0


# --- levels -------------------------------------------------------------------------------------


def test_level_curve_starts_at_zero_and_each_level_costs_a_little_more() -> None:
    assert [level_threshold_xp(lv) for lv in range(1, 6)] == [0, 200, 450, 750, 1100]
    assert [level_for_xp(x) for x in (0, 199, 200, 449, 450, 1_099, 1_100)] == [1, 1, 2, 2, 3, 4, 5]
    steps = [level_threshold_xp(lv + 1) - level_threshold_xp(lv) for lv in range(1, 200)]
    assert all(b > a for a, b in pairwise(steps))
    levels = [level_for_xp(x) for x in range(0, 300_000, 97)]
    assert all(b >= a for a, b in pairwise(levels))


@given(st.integers(min_value=1, max_value=5_000))
def test_level_for_xp_inverts_the_threshold(level: int) -> None:
    start = level_threshold_xp(level)
    assert level_for_xp(start) == level
    if level > 1:
        assert level_for_xp(start - 1) == level - 1
    flat = RewardsPolicy(level_step_xp=0)
    assert level_for_xp(level_threshold_xp(level, flat), flat) == level


def test_profile_reports_progress_within_the_level() -> None:
    p = profile([run(local(2024, 5, 6), 2_000.0)])  # 270 XP: level 2 spans 200..450
    assert (p.xp, p.level, p.xp_into_level, p.xp_for_next_level) == (270, 2, 70, 250)
    empty = profile()
    assert (empty.xp, empty.level, empty.xp_into_level, empty.xp_for_next_level) == (0, 1, 0, 200)


# --- badges -------------------------------------------------------------------------------------


def test_distance_badges_are_earned_by_the_first_long_enough_run() -> None:
    days = [local(2024, 5, d) for d in range(1, 7)]
    runs = [
        run(days[0], 999.9),
        run(days[1], 1_000.0),
        run(days[2], 5_000.0),
        run(days[3], 9_999.0),
        run(days[4], 10_000.0),
        run(days[5], 12_000.0),
    ]
    got = earned(profile(runs))
    assert got["first_backward_km"] == days[1]
    assert got["first_5k"] == days[2]
    assert got["first_10k"] == days[4]
    assert "half_marathon" not in got and "marathon" not in got


def test_one_marathon_earns_every_distance_badge_at_once_in_catalogue_order() -> None:
    t = local(2024, 4, 14, 9)
    p = profile([run(t, 42_195.0)])
    codes = [b.code for b in p.badges]
    assert codes == ["first_backward_km", "first_5k", "first_10k", "half_marathon", "marathon"]
    assert all(b.earned_at == t and b.name == BADGES[b.code][0] for b in p.badges)


def test_century_is_earned_by_the_run_that_crosses_100_km() -> None:
    runs = daily(local(2024, 1, 1), 20, 5_000.0)
    assert earned(profile(runs))["century"] == runs[19].ended_at
    assert "century" not in earned(profile(runs[:19]))


def test_week_streak_badges_at_2_4_and_12_consecutive_iso_weeks() -> None:
    runs = [run(local(2024, 1, 3) + timedelta(weeks=w)) for w in range(12)]  # Wednesdays
    got = earned(profile(runs))
    assert got["week_streak_2"] == runs[1].ended_at
    assert got["week_streak_4"] == runs[3].ended_at
    assert got["week_streak_12"] == runs[11].ended_at
    assert "week_streak_12" not in earned(profile(runs[:11]))


def test_day_streak_7_is_earned_on_the_seventh_consecutive_day() -> None:
    runs = daily(local(2024, 2, 1), 7)
    assert earned(profile(runs))["day_streak_7"] == runs[6].ended_at
    broken = runs[:3] + runs[4:]
    assert "day_streak_7" not in earned(profile(broken))


def test_clean_record_needs_ten_clean_runs_with_no_flagged_run_between() -> None:
    start = local(2024, 3, 1)
    runs = [run(start + timedelta(hours=i), clean=(i != 9)) for i in range(20)]
    got = earned(profile(runs))
    assert got["clean_record"] == runs[19].ended_at  # 9 clean, flagged, then runs 10..19
    # A moderator rejects the flagged run: it is left out, and the chain is unbroken.
    without = [r for r in runs if r.clean]
    assert earned(profile(without))["clean_record"] == without[9].ended_at


def test_challenge_podium_is_earned_at_the_first_podium() -> None:
    first = local(2024, 6, 2)
    podiums = [Podium("race-2", 1, first + timedelta(days=5)), Podium("chal-1", 3, first)]
    assert earned(profile(podiums=podiums))["challenge_podium"] == first


def test_drill_badges() -> None:
    start = local(2024, 6, 1)
    drills = [drill(start + timedelta(days=i), reaction_ms=420.0, sync=0.5) for i in range(12)]
    drills[4] = drill(start + timedelta(days=4), reaction_ms=301.0, sync=0.89)
    drills[6] = drill(start + timedelta(days=6), reaction_ms=None, sync=0.9)
    drills[8] = drill(start + timedelta(days=8), reaction_ms=300.0, sync=None)
    got = earned(profile(drills=drills))
    assert got["balance_master"] == drills[9].at
    assert got["in_sync"] == drills[6].at
    assert got["quick_reflexes"] == drills[8].at
    assert "balance_master" not in earned(profile(drills=drills[:9]))


@pytest.mark.parametrize(
    ("hour", "minute", "badge"),
    [
        (3, 59, "night_owl"),
        (4, 0, "early_bird"),
        (6, 59, "early_bird"),
        (7, 0, None),
        (20, 59, None),
        (21, 0, "night_owl"),
        (23, 59, "night_owl"),
    ],
)
def test_early_bird_and_night_owl_use_local_end_time(
    hour: int, minute: int, badge: str | None
) -> None:
    got = set(earned(profile([run(local(2024, 7, 1, hour, minute), 500.0)])))
    assert got == ({badge} if badge else set())


def test_early_bird_depends_on_the_runners_time_zone() -> None:
    at = datetime(2024, 7, 1, 5, 30, tzinfo=UTC)  # 07:30 in Berlin (CEST)
    assert "early_bird" in earned(profile([run(at, 500.0)], tz=UTC_ZONE))
    assert "early_bird" not in earned(profile([run(at, 500.0)], tz=BERLIN))


def test_badges_are_listed_in_time_order_once_each() -> None:
    runs = daily(local(2024, 1, 1, 6), 30, 4_000.0)
    p = profile(runs)
    codes = [b.code for b in p.badges]
    assert len(codes) == len(set(codes))
    assert [b.earned_at for b in p.badges] == sorted(b.earned_at for b in p.badges)
    assert codes[0] == "first_backward_km" and "early_bird" in codes


# --- streaks ------------------------------------------------------------------------------------


def test_day_streak_spans_dst_changes_by_local_date() -> None:
    spring = [local(2024, 3, 30, 23, 30), local(2024, 3, 31, 23, 30), local(2024, 4, 1, 0, 30)]
    p = profile([run(t) for t in spring], now=local(2024, 4, 1, 20))
    assert (p.day_streak, p.best_day_streak) == (3, 3)
    # Autumn: 00:30 on 26 Oct and 23:30 on 27 Oct are 47 h apart (a 25 h day) yet consecutive.
    autumn = [local(2024, 10, 26, 0, 30), local(2024, 10, 27, 23, 30)]
    p = profile([run(t) for t in autumn], now=local(2024, 10, 28, 8))
    assert (p.day_streak, p.best_day_streak) == (2, 2)


def test_week_streak_spans_a_dst_change() -> None:
    times = [local(2024, 3, 24, 23, 0), local(2024, 3, 25, 0, 30), local(2024, 4, 7, 23, 59)]
    p = profile([run(t) for t in times], now=local(2024, 4, 7, 23, 59))
    assert (p.week_streak, p.best_week_streak) == (3, 3)


def test_week_streak_crosses_iso_week_53_into_week_1() -> None:
    assert local(2020, 12, 30).isocalendar()[1] == 53
    times = [local(2020, 12, 23), local(2020, 12, 30), local(2021, 1, 6)]
    p = profile([run(t) for t in times], now=local(2021, 1, 10, 20))
    assert (p.week_streak, p.best_week_streak) == (3, 3)
    assert "week_streak_2" in earned(p)


def test_week_streak_crosses_a_year_whose_last_days_are_next_years_week_1() -> None:
    times = [local(2024, 12, 23), local(2024, 12, 31), local(2025, 1, 8)]  # W52, 2025-W01, W02
    p = profile([run(t) for t in times], now=local(2025, 1, 8))
    assert (p.week_streak, p.day_streak) == (3, 1)


def test_day_streak_is_current_through_yesterday_and_broken_after() -> None:
    runs = daily(local(2024, 5, 6, 7), 3)  # Mon, Tue, Wed
    assert profile(runs, now=local(2024, 5, 8, 23)).day_streak == 3
    assert profile(runs, now=local(2024, 5, 9, 23, 59)).day_streak == 3
    late = profile(runs, now=local(2024, 5, 10, 0, 1))
    assert (late.day_streak, late.best_day_streak) == (0, 3)


def test_now_is_read_in_the_runners_time_zone() -> None:
    runs = daily(local(2024, 5, 6, 7), 3)  # last run Wednesday 8 May
    now = datetime(2024, 5, 9, 22, 30, tzinfo=UTC)  # Thursday in UTC, Friday 00:30 in Berlin
    assert profile(runs, tz=UTC_ZONE, now=now).day_streak == 3
    assert profile(runs, tz=BERLIN, now=now).day_streak == 0


def test_week_streak_is_current_through_last_week_and_broken_after() -> None:
    runs = [run(local(2024, 5, 6) + timedelta(weeks=w)) for w in range(3)]  # weeks 19..21
    assert profile(runs, now=local(2024, 6, 2, 23)).week_streak == 3  # Sunday of week 22
    broken = profile(runs, now=local(2024, 6, 3, 0, 5))  # Monday of week 23
    assert (broken.week_streak, broken.best_week_streak) == (0, 3)


def test_best_streak_survives_a_gap_and_current_restarts() -> None:
    days = [1, 2, 3, 4, 7, 8]
    p = profile([run(local(2024, 5, d)) for d in days], now=local(2024, 5, 8, 20))
    assert (p.day_streak, p.best_day_streak) == (2, 4)


def test_a_run_at_2330_utc_counts_as_the_next_day_in_berlin() -> None:
    runs = [
        run(datetime(2024, 1, 1, 23, 30, tzinfo=UTC)),
        run(datetime(2024, 1, 2, 12, 0, tzinfo=UTC)),
    ]
    now = datetime(2024, 1, 2, 13, 0, tzinfo=UTC)
    assert profile(runs, tz=UTC_ZONE, now=now).day_streak == 2
    assert profile(runs, tz=BERLIN, now=now).day_streak == 1  # both on 2 January locally


# --- reversals and input hygiene ----------------------------------------------------------------


def test_a_rejected_run_is_left_out_and_takes_its_credit_with_it() -> None:
    runs = daily(local(2024, 9, 2, 18), 3)
    runs[1] = run(runs[1].ended_at, 5_000.0)
    before = profile(runs)
    after = profile([runs[0], runs[2]], now=runs[2].ended_at)
    assert before.xp - after.xp == xp_for_run(5_000.0, "backward_run")
    assert (before.total_runs, after.total_runs) == (3, 2)
    assert after.total_distance_m == 6_000.0
    assert (before.day_streak, after.day_streak) == (3, 1)
    assert "first_5k" in earned(before) and "first_5k" not in earned(after)


def test_redelivered_identical_facts_count_once_but_conflicting_ones_are_refused() -> None:
    r = run(local(2024, 5, 6), 1_000.0)
    assert profile([r, r]).xp == profile([r]).xp
    with pytest.raises(InvalidCommand):
        profile([r, run(r.ended_at, 2_000.0, run_id=r.run_id)])


def test_naive_datetimes_and_bad_values_are_refused() -> None:
    with pytest.raises(InvalidCommand):
        CreditedRun("r", datetime(2024, 1, 1), 1_000.0, 400.0, "backward_run", True)
    with pytest.raises(InvalidCommand):
        Podium("c", 4, local(2024, 1, 1))
    with pytest.raises(InvalidCommand):
        DrillResult("d", local(2024, 1, 1), None, 1.5)
    with pytest.raises(InvalidCommand):
        compute_profile([], [], [], BERLIN, datetime(2024, 1, 1))


# --- property -----------------------------------------------------------------------------------

_runs = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=90),  # day offset
        st.integers(min_value=0, max_value=23),  # hour (coarse, so ties happen)
        st.floats(min_value=0.0, max_value=25_000.0, allow_nan=False),
        st.sampled_from(["backward_run", "backward_walk", "race"]),
        st.booleans(),
    ),
    max_size=40,
).map(
    lambda rows: [
        run(
            local(2024, 1, 1, 0) + timedelta(days=d, hours=h),
            m,
            activity=a,
            clean=c,
            run_id=f"r{i}",
        )
        for i, (d, h, m, a, c) in enumerate(rows)
    ]
)


_drills = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=90),
        st.none() | st.floats(min_value=100.0, max_value=900.0),
        st.none() | st.floats(min_value=0.0, max_value=1.0),
    ),
    max_size=15,
).map(
    lambda rows: [
        DrillResult(f"d{i}", local(2024, 1, 1) + timedelta(days=d), ms, sync)
        for i, (d, ms, sync) in enumerate(rows)
    ]
)
_podiums = st.lists(
    st.tuples(st.integers(min_value=0, max_value=90), st.integers(min_value=1, max_value=3)),
    max_size=5,
).map(
    lambda rows: [
        Podium(f"c{i}", place, local(2024, 1, 1) + timedelta(days=d))
        for i, (d, place) in enumerate(rows)
    ]
)


@settings(max_examples=60, deadline=None)
@given(runs=_runs, drills=_drills, podiums=_podiums, data=st.data())
def test_profile_does_not_depend_on_the_input_order(
    runs: list[CreditedRun],
    drills: list[DrillResult],
    podiums: list[Podium],
    data: st.DataObject,
) -> None:
    now = local(2024, 4, 1)
    given_order = compute_profile(runs, podiums, drills, BERLIN, now)
    shuffled = compute_profile(
        data.draw(st.permutations(runs)),
        data.draw(st.permutations(podiums)),
        data.draw(st.permutations(drills)),
        BERLIN,
        now,
    )
    assert shuffled == given_order
    assert [b.earned_at for b in given_order.badges] == sorted(
        b.earned_at for b in given_order.badges
    )
