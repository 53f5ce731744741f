"""Pace check, live driver: live signals, and the final verdict equals the batch verdict.

Equality contract: status, score, flag codes (in order), points, hard fails, low confidence,
record eligibility and fixes used are compared exactly; distances and times to 1e-9 relative
(both drivers run the same vectorised code on the same arrays, so in practice they are equal).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from game.pace import Activity, Flag, LiveCheck, PacePolicy, Verdict, check_track, policy_for
from game.track import EARTH_RADIUS_M, Fix, Track

M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
T0 = 1_700_000_000.0
RACE = policy_for(Activity.RACE)


def run_fixes(n: int = 300, speed_mps: float = 2.5, seed: int = 1, acc_m: float = 5.0) -> list[Fix]:
    """An honest run north at `speed_mps` with small GPS noise, as fixes."""
    rng = np.random.default_rng(seed)
    north = speed_mps * np.arange(n) + rng.normal(0, 1.5, n)
    east = rng.normal(0, 1.5, n)
    return [
        Fix(
            T0 + k,
            52.0 + north[k] / M_PER_DEG,
            13.0 + east[k] / (M_PER_DEG * math.cos(math.radians(52.0))),
            acc_m=float(acc_m + rng.uniform(-1, 1)),
        )
        for k in range(n)
    ]


def feed(
    fixes: list[Fix], policy: PacePolicy | None = None, lag_s: float = 1.0
) -> tuple[LiveCheck, list[Flag]]:
    live = LiveCheck(policy)
    raised: list[Flag] = []
    for f in fixes:
        raised += live.add(f, f.t + lag_s if math.isfinite(f.t) else T0)
    return live, raised


def assert_same(a: Verdict, b: Verdict) -> None:
    assert a.status == b.status
    assert a.score == b.score
    assert [(f.code, f.points, f.hard_fail) for f in a.flags] == [
        (f.code, f.points, f.hard_fail) for f in b.flags
    ]
    assert (a.low_confidence, a.record_eligible, a.fixes_used) == (
        b.low_confidence,
        b.record_eligible,
        b.fixes_used,
    )
    for x, y in (
        (a.distance_m, b.distance_m),
        (a.elapsed_s, b.elapsed_s),
        (a.moving_s, b.moving_s),
    ):
        assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


def test_live_verdict_equals_batch_on_an_honest_run() -> None:
    fixes = run_fixes(600)
    live, raised = feed(fixes, RACE)
    assert raised == []
    batch = check_track(Track.from_fixes(fixes), RACE, now=fixes[-1].t + 1.0)
    assert_same(live.verdict(), batch)
    assert live.verdict().status == "verified"
    assert live.distance_m == pytest.approx(batch.distance_m, rel=0.1)
    assert live.elapsed_s == 599.0


def test_verdict_mid_race_then_more_fixes() -> None:
    fixes = run_fixes(400)
    live, _ = feed(fixes[:200], RACE)
    mid = live.verdict()
    for f in fixes[200:]:
        live.add(f, f.t + 1.0)
    assert live.fixes_added == 400
    assert live.verdict().distance_m > mid.distance_m
    assert_same(live.verdict(), check_track(Track.from_fixes(fixes), RACE, now=fixes[-1].t + 1))


def test_empty_live_check_gives_the_empty_verdict() -> None:
    v = LiveCheck().verdict()
    assert v.status == "rejected" and v.flags[0].code == "empty_track"


def test_mock_location_in_a_race_is_a_live_hard_fail_once() -> None:
    fixes = run_fixes(100)
    fixes[50] = Fix(fixes[50].t, fixes[50].lat, fixes[50].lon, acc_m=5.0, mock=True)
    fixes[60] = Fix(fixes[60].t, fixes[60].lat, fixes[60].lon, acc_m=5.0, mock=True)
    live, raised = feed(fixes, RACE)
    assert [(f.code, f.hard_fail) for f in raised] == [("mock_location", True)]
    assert live.verdict().status == "rejected"


def test_a_kilometre_jump_and_superhuman_speed_are_raised_live() -> None:
    fixes = run_fixes(100)
    far = [Fix(f.t, f.lat + 2000.0 / M_PER_DEG, f.lon, acc_m=5.0) for f in fixes[50:]]
    _, raised = feed(fixes[:50] + far, RACE)
    assert ("jump", True) in [(f.code, f.hard_fail) for f in raised]
    spiked = list(fixes)
    spiked[50] = Fix(fixes[50].t, fixes[50].lat + 2000.0 / M_PER_DEG, fixes[50].lon, acc_m=5.0)
    live, raised = feed(spiked, RACE)
    assert raised == []  # a kilometre spike that comes back is a glitch, not a hard fail
    assert "spike" in {f.code for f in live.verdict().flags}
    car = [Fix(T0 + k, 52.0 + 20.0 * k / M_PER_DEG, 13.0, acc_m=5.0) for k in range(30)]
    _, raised = feed(car, RACE)
    assert [f.code for f in raised] == ["superhuman_speed"]


def test_signal_lost_after_30_s_and_no_progress_after_60_s() -> None:
    fixes = run_fixes(20)
    live, _ = feed(fixes, RACE)
    last = fixes[-1].t
    assert live.tick(last + 20.0) == []
    assert [f.code for f in live.tick(last + 31.0)] == ["signal_lost"]
    assert live.tick(last + 40.0) == []  # raised once per silence
    assert [f.code for f in live.tick(last + 61.0)] == ["no_progress"]
    assert live.tick(last + 90.0) == []
    # the next fix ends the silence without a second signal_lost
    assert live.add(Fix(last + 95.0, fixes[-1].lat, fixes[-1].lon, acc_m=5.0), last + 95.0) == []


def test_signal_lost_is_raised_by_a_late_fix_without_ticks() -> None:
    fixes = run_fixes(20)
    live, _ = feed(fixes, RACE)
    late = Fix(fixes[-1].t + 45.0, fixes[-1].lat, fixes[-1].lon, acc_m=5.0)
    assert [f.code for f in live.add(late, late.t)] == ["signal_lost"]


def test_uploads_have_no_live_signals() -> None:
    live, _ = feed(run_fixes(20))
    assert live.tick(T0 + 500.0) == []


def test_bad_and_future_fixes_are_flagged_live_and_match_batch() -> None:
    fixes = run_fixes(200)
    fixes[100] = fixes[99]  # duplicate
    fixes[150] = Fix(fixes[150].t + 60.0, fixes[150].lat, fixes[150].lon, acc_m=5.0)
    live = LiveCheck(RACE)
    raised = [flag for k, f in enumerate(fixes) for flag in live.add(f, T0 + k + 1.0)]
    assert {f.code for f in raised} >= {"bad_timestamps", "future_timestamps"}
    now = T0 + 200.0
    assert_same(live.verdict(now), check_track(Track.from_fixes(fixes), RACE, now=now))


def test_live_state_stays_bounded_without_kept_fixes() -> None:
    """O(1) per fix: with `keep_fixes=False` nothing the check holds grows with the run (its
    speed is measured in bench/bench_pace.py, not asserted here)."""

    def sizes(live: LiveCheck) -> dict[str, int]:
        held = {name: getattr(live, name) for name in LiveCheck.__slots__}
        return {k: len(v) for k, v in held.items() if hasattr(v, "__len__")}

    fixes = run_fixes(20_000)
    live = LiveCheck(RACE, keep_fixes=False)
    early: dict[str, int] = {}
    for k, f in enumerate(fixes):
        live.add(f, f.t + 1.0)
        if k + 1 == 2_000:
            early = sizes(live)
    late = sizes(live)
    assert live.fixes_added == 20_000 and live.distance_m > 40_000.0
    assert late["_rows"] == late["_extras"] == 0
    assert max(late.values()) <= 32, late  # a few recent fixes, 2 minutes of pace samples
    assert all(late[k] <= max(early[k], 32) for k in late), (early, late)


# --- the property: batch verdict == incremental verdict on the same fixes ---------------------

EVENTS = st.sampled_from(
    [
        "run",
        "run",
        "run",
        "stand",
        "gap",
        "long_gap",
        "jump",
        "spike",
        "fast",
        "car",
        "dup",
        "bad_acc",
        "mock",
        "nan",
    ]
)


@st.composite
def fix_sequences(draw: st.DrawFn) -> list[Fix]:
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    plan = draw(st.lists(st.tuples(EVENTS, st.integers(1, 60)), min_size=0, max_size=12))
    noise = draw(st.floats(0.0, 6.0))
    acc = draw(st.sampled_from([None, 3.0, 5.0, 12.0]))
    fixes: list[Fix] = []
    t, north, east = T0, 0.0, 0.0
    speed = draw(st.floats(0.5, 5.0))
    for event, length in plan:
        for _ in range(length):
            dt = 1.0
            mock = False
            acc_m = None if acc is None else float(acc + rng.uniform(-1, 1))
            if event == "gap":
                dt = 15.0
            elif event == "long_gap":
                dt = 90.0
            if event == "stand":
                step = 0.0
            elif event == "fast":
                step = 7.0 * dt
            elif event == "car":
                step = 15.0 * dt
            else:
                step = speed * dt * (1 + 0.1 * rng.normal())
            t += dt
            north += step
            if event == "jump" and _ == 0:
                east += 400.0
            lat = 52.0 + (north + rng.normal(0, noise + 1e-9)) / M_PER_DEG
            lon = 13.0 + (east + rng.normal(0, noise + 1e-9)) / (M_PER_DEG * 0.6157)
            if event == "spike" and _ == 0:
                lat += 300.0 / M_PER_DEG
            ft = t
            if event == "dup" and _ == 0 and fixes:
                ft = fixes[-1].t
            if event == "bad_acc":
                acc_m = 40.0
            if event == "mock":
                mock = True
            if event == "nan" and _ == 0:
                lat = math.nan
            fixes.append(
                Fix(
                    ft,
                    lat,
                    lon,
                    acc_m=acc_m,
                    mock=mock,
                    heading_deg=float(rng.uniform(0, 360)) if acc == 3.0 else None,
                    cadence_spm=170.0 if acc == 5.0 else None,
                )
            )
    return fixes


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fixes=fix_sequences(), race=st.booleans(), lag_s=st.floats(-3.0, 30.0))
def test_live_final_verdict_equals_batch_verdict(
    fixes: list[Fix], race: bool, lag_s: float
) -> None:
    policy = RACE if race else PacePolicy()
    live, _ = feed(fixes, policy, lag_s=lag_s)
    now = (fixes[-1].t if fixes else T0) + lag_s
    batch = check_track(Track.from_fixes(fixes), policy, now=now)
    assert_same(live.verdict(now), batch)
    if fixes and math.isfinite(fixes[-1].t):
        assert_same(
            live.verdict(), check_track(Track.from_fixes(fixes), policy, now=live_now(fixes, lag_s))
        )


def live_now(fixes: list[Fix], lag_s: float) -> float:
    """The latest `now` the feed passed to `add` (what `verdict()` uses by default)."""
    return max(f.t + lag_s if math.isfinite(f.t) else T0 for f in fixes)


@pytest.mark.parametrize("profile", ["honest_trained", "bike", "forward_runner", "teleport"])
def test_float32_extras_keep_the_verdict_of_stored_fixes(profile: str) -> None:
    """A race room keeps its fixes' extras as float32 (`float32_extras`): the fixes it checks
    are `stored_fix`es, whose extras are float32 already, so the verdict at the finish is still
    the batch verdict on the same fixes, and the one a float64 live check reaches."""
    from game.generate import Profile, generate_run
    from server.tracks import stored_fix

    run = generate_run(Profile(profile), np.random.default_rng(7), T0, 1500.0)
    fixes = [stored_fix(f) for f in run.track.fixes()]
    compact, _ = feed(fixes, RACE)
    compact_32 = LiveCheck(RACE, float32_extras=True)
    for f in fixes:
        compact_32.add(f, f.t + 1.0)
    now = fixes[-1].t + 1.0
    batch = check_track(Track.from_fixes(fixes), RACE, now=now)
    assert_same(compact_32.verdict(now), batch)
    assert_same(compact_32.verdict(now), compact.verdict(now))
    assert compact_32.verdict(now).distance_m == batch.distance_m
