"""Pace check, batch driver: each rule raises its code; bad input gives a clear verdict."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from game.pace import Activity, Flag, PacePolicy, Verdict, check_track, policy_for
from game.track import EARTH_RADIUS_M, Track

M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
T0 = 1_700_000_000.0
NOW = T0 + 100_000.0


def make_track(
    speed_mps: float | np.ndarray = 2.5,
    n: int = 900,
    *,
    heading_deg: float = 0.0,
    dt_s: float = 1.0,
    noise_m: float = 2.0,
    speed_cv: float = 0.08,
    acc_m: float = 5.0,
    seed: int = 1,
    facing_offset_deg: float | None = None,
    cadence_spm: float | None = None,
) -> Track:
    """An honest-looking straight run: wandering speed, correlated GPS noise, varied accuracy."""
    rng = np.random.default_rng(seed)
    t = T0 + dt_s * np.arange(n, dtype=np.float64)
    base = np.broadcast_to(np.asarray(speed_mps, dtype=np.float64), (n,))
    wander = np.convolve(rng.normal(0, 1, n + 20), np.ones(20) / math.sqrt(20), "valid")[:n]
    v = np.maximum(base * (1 + speed_cv * wander), 0.0)
    s = np.concatenate(([0.0], np.cumsum(v[:-1] * dt_s)))
    noise = np.zeros((n, 2))
    e = rng.normal(0, noise_m * math.sqrt(1 - 0.8**2), (n, 2))
    for k in range(1, n):
        noise[k] = 0.8 * noise[k - 1] + e[k]
    h = math.radians(heading_deg)
    north = s * math.cos(h) + noise[:, 0]
    east = s * math.sin(h) + noise[:, 1]
    lat = 52.0 + north / M_PER_DEG
    lon = 13.0 + east / (M_PER_DEG * math.cos(math.radians(52.0)))
    acc = np.round(np.clip(rng.normal(acc_m, 1.0, n), 2.0, 15.0), 1)
    extra: dict[str, np.ndarray] = {}
    if facing_offset_deg is not None:
        extra["heading_deg"] = (heading_deg + facing_offset_deg + rng.normal(0, 10, n)) % 360
        extra["course_deg"] = np.full(n, heading_deg)
        extra["course_acc_deg"] = np.full(n, 5.0)
    if cadence_spm is not None:
        extra["cadence_spm"] = np.full(n, cadence_spm) + rng.normal(0, 3, n)
    return Track.from_arrays(t, lat, lon, acc_m=acc, **extra)


def check(track: Track, policy: PacePolicy | None = None, now: float = NOW) -> Verdict:
    return check_track(track, policy, now=now)


def codes(verdict: Verdict) -> set[str]:
    return {f.code for f in verdict.flags}


def flag(verdict: Verdict, code: str) -> Flag:
    return next(f for f in verdict.flags if f.code == code)


def num(f: Flag, key: str) -> float:
    value = f.evidence[key]
    assert not isinstance(value, str)
    return float(value)


def with_cols(track: Track, **cols: object) -> Track:
    return replace(track, **cols)  # type: ignore[arg-type]


# --- honest runs and the decision ------------------------------------------------------------


def test_honest_recreational_run_is_verified_and_record_eligible() -> None:
    v = check(make_track(2.5, n=1800))
    assert v.status == "verified", v.flags
    assert v.score == 0
    assert v.record_eligible and not v.low_confidence
    assert v.distance_m == pytest.approx(2.5 * 1800, rel=0.06)
    assert v.elapsed_s == 1799.0
    assert v.moving_s > 1700
    assert v.fixes_used == 1800


def test_honest_walker_and_trained_runner_are_verified() -> None:
    assert check(make_track(1.3, n=1200, seed=2)).status == "verified"
    assert check(make_track(4.1, n=1200, seed=3)).status == "verified"


def test_verdict_to_dict_is_json_ready() -> None:
    track = make_track(2.5, n=300)
    t = track.t.copy()
    t[10] = t[9]
    v = check(with_cols(track, t=t))
    data = json.loads(json.dumps(v.to_dict()))
    assert data["status"] in {"verified", "review", "rejected"}
    assert data["flags"][0]["code"] == "bad_timestamps"
    assert set(data["flags"][0]["evidence"]) >= {"count", "index", "t"}


def test_score_thresholds_decide_the_status() -> None:
    policy = PacePolicy()
    track = make_track(2.5, n=600)
    mock = np.zeros(600, np.bool_)
    mock[5] = True
    v = check(with_cols(track, mock=mock), policy)
    assert v.score == policy.mock_points == 30 and v.status == "review"
    assert not v.record_eligible
    v = check(with_cols(track, mock=mock), policy.with_changes(mock_points=29))
    assert v.status == "verified"
    v = check(with_cols(track, mock=mock), policy.with_changes(mock_points=60))
    assert v.status == "rejected"


# --- bad input ---------------------------------------------------------------------------------


def test_empty_track_is_rejected_with_a_code() -> None:
    v = check(Track.from_fixes([]))
    assert v.status == "rejected" and codes(v) == {"empty_track"}


def test_one_fix_is_too_few() -> None:
    v = check(make_track(n=1))
    assert v.status == "rejected" and "too_few_fixes" in codes(v)


def test_all_nan_track_is_rejected_not_raised() -> None:
    nan = np.full(50, np.nan)
    v = check(Track.from_arrays(nan, nan, nan))
    assert v.status == "rejected"
    assert "too_few_fixes" in codes(v)


def test_latitude_91_is_invalid_coordinates() -> None:
    track = make_track(n=300)
    lat = track.lat.copy()
    lat[100] = 91.0
    v = check(with_cols(track, lat=lat))
    assert flag(v, "invalid_coordinates").evidence["count"] == 1
    assert flag(v, "invalid_coordinates").points == 0  # 1 of 300 is under 1%
    lat[:200] = 91.0
    v = check(with_cols(track, lat=lat))
    assert v.status == "rejected" and flag(v, "invalid_coordinates").hard_fail


def test_duplicate_and_out_of_order_times_score_ten_per_percent() -> None:
    track = make_track(n=200)
    t = track.t.copy()
    t[50], t[51] = t[51], t[50]  # one out of order
    t[100] = t[99]  # one duplicate
    v = check(with_cols(track, t=t))
    f = flag(v, "bad_timestamps")
    assert f.evidence["count"] == 2 and f.points == 10 and not f.hard_fail
    assert v.fixes_used == 198


def test_bad_fix_points_count_all_kinds_together() -> None:
    track = make_track(n=200)
    t, lat = track.t.copy(), track.lat.copy()
    t[100] = t[99]  # 0.5% duplicates
    lat[150] = np.nan  # 0.5% invalid coordinates
    v = check(with_cols(track, t=t, lat=lat))
    assert flag(v, "bad_timestamps").points + flag(v, "invalid_coordinates").points == 10


def test_unsorted_track_is_rejected_as_bad_timestamps() -> None:
    track = make_track(n=200)
    order = np.random.default_rng(0).permutation(200)
    v = check(with_cols(track, t=track.t[order]))
    assert v.status == "rejected"
    assert flag(v, "bad_timestamps").hard_fail


def test_times_before_2000_are_bad() -> None:
    track = make_track(n=100)
    v = check(with_cols(track, t=track.t - 1_000_000_000.0))
    assert v.status == "rejected" and "bad_timestamps" in codes(v)


def test_future_timestamps_beyond_5_s_fail() -> None:
    track = make_track(n=300)
    v = check(track, now=float(track.t[-1]) + 4.0)
    assert "future_timestamps" not in codes(v)
    v = check(track, now=float(track.t[-1]) - 10.0)
    assert flag(v, "future_timestamps").evidence["count"] == 5
    v = check(track, now=float(track.t[0]))
    assert v.status == "rejected" and "future_timestamps" in codes(v)


def test_one_million_fixes_give_a_verdict() -> None:
    n = 1_000_000
    rng = np.random.default_rng(5)
    t = T0 + np.arange(n, dtype=np.float64)
    lat = 52.0 + np.cumsum(rng.normal(0, 2e-5, n))
    lon = 13.0 + np.cumsum(rng.normal(0, 2e-5, n))
    track = Track.from_arrays(t, lat, lon, acc_m=rng.uniform(3, 8, n))
    v = check_track(track, now=T0 + n + 10)  # its speed: bench/bench_pace.py
    assert v.status in {"verified", "review", "rejected"}
    assert v.fixes_used > 0.9 * n


def test_infinite_and_nan_values_in_optional_fields_do_not_raise() -> None:
    track = make_track(n=300, facing_offset_deg=180.0, cadence_spm=170.0)
    acc = track.acc_m.copy()
    acc[::7] = np.nan
    acc[3] = np.inf
    heading = track.heading_deg.copy()
    heading[::3] = np.nan
    v = check(with_cols(track, acc_m=acc, heading_deg=heading, speed_mps=np.full(300, np.inf)))
    assert v.status in {"verified", "review"}


# --- H2 accuracy, H3 mock, H4 extrapolation ---------------------------------------------------


def test_poor_accuracy_means_low_confidence_but_still_counts() -> None:
    v = check(make_track(2.5, n=600, acc_m=12.0))
    assert v.low_confidence and not v.record_eligible
    assert "low_accuracy" in codes(v) and v.status == "verified"


def test_fixes_worse_than_20_m_are_dropped() -> None:
    track = make_track(n=600)
    acc = track.acc_m.copy()
    acc[100:400] = 30.0
    v = check(with_cols(track, acc_m=acc))
    assert v.fixes_used == 300 and v.low_confidence
    assert flag(v, "low_accuracy").evidence["count"] == 300


def test_track_without_accuracy_is_checked_with_a_default_sigma() -> None:
    track = make_track(n=600)
    v = check(with_cols(track, acc_m=np.full(600, np.nan)))
    assert v.low_confidence and v.status == "verified" and v.fixes_used == 600


def test_mock_location_is_review_on_upload_and_hard_fail_in_a_race() -> None:
    track = make_track(n=300)
    mock = np.zeros(300, np.bool_)
    mock[200:] = True
    upload = check(with_cols(track, mock=mock))
    assert upload.status == "review" and not flag(upload, "mock_location").hard_fail
    race = check(with_cols(track, mock=mock), policy_for(Activity.RACE))
    assert race.status == "rejected" and flag(race, "mock_location").hard_fail


def test_identical_one_second_steps_are_extrapolation_and_not_credited() -> None:
    track = make_track(3.0, n=600)
    lat, lon = track.lat.copy(), track.lon.copy()
    k = np.arange(1, 9)
    lat[300:308] = lat[299] + 6.0 * k / M_PER_DEG  # 8 identical 6 m steps north
    lon[300:308] = lon[299]
    shift = lat[307] - lat[308] + 3.0 / M_PER_DEG
    lat[308:] += shift
    v = check(with_cols(track, lat=lat, lon=lon))
    f = flag(v, "extrapolated")
    assert num(f, "count") >= 8 and f.points == 0
    assert v.distance_m < check(track).distance_m + 48 - 10


# --- G2/G3 gaps and G4 spikes and jumps -------------------------------------------------------


def test_watch_smart_recording_gaps_are_sparse_and_block_records() -> None:
    track = make_track(2.5, n=200, dt_s=15.0, noise_m=1.0)
    v = check(track)
    f = flag(v, "sparse_sampling")
    assert f.points == 0 and num(f, "share") > 0.9
    assert v.status == "verified" and not v.record_eligible
    assert v.distance_m == pytest.approx(2.5 * 15 * 199, rel=0.05)


def test_gap_over_60_s_is_a_break_without_credit() -> None:
    track = make_track(2.5, n=600)
    t = track.t.copy()
    t[300:] += 120.0  # signal lost for two minutes, runner moved on 300 m
    lat = track.lat.copy()
    lat[300:] += 300.0 / M_PER_DEG
    v = check(with_cols(track, t=t, lat=lat))
    f = flag(v, "signal_break")
    assert f.evidence["duration_s"] == 121.0
    assert v.distance_m == pytest.approx(check(track).distance_m, rel=0.03)
    assert "jump" not in codes(v)


def test_a_spike_that_comes_back_is_dropped_for_two_points() -> None:
    track = make_track(2.5, n=600)
    lat = track.lat.copy()
    lat[200] += 150.0 / M_PER_DEG
    v = check(with_cols(track, lat=lat))
    f = flag(v, "spike")
    assert f.points == 2 and f.evidence["index"] == 200
    assert v.fixes_used == 599
    assert v.distance_m == pytest.approx(check(track).distance_m, rel=0.01)


def test_spike_points_are_capped_at_10() -> None:
    track = make_track(2.5, n=600)
    lat = track.lat.copy()
    lat[50:550:50] += 150.0 / M_PER_DEG
    assert flag(check(with_cols(track, lat=lat)), "spike").points == 10


@pytest.mark.parametrize(
    ("jump_m", "points", "hard"), [(120.0, 10, False), (400.0, 40, False), (1500.0, 40, True)]
)
def test_a_jump_that_stays_scores_by_size(jump_m: float, points: int, hard: bool) -> None:
    track = make_track(2.5, n=600)
    lon = track.lon.copy()
    lon[300:] += jump_m / (M_PER_DEG * math.cos(math.radians(52.0)))
    v = check(with_cols(track, lon=lon))
    f = flag(v, "jump")
    assert f.points == points and f.hard_fail is hard
    assert f.evidence["distance_m"] == pytest.approx(jump_m, abs=15)
    assert v.distance_m == pytest.approx(check(track).distance_m, rel=0.03)


# --- S1 best efforts, V1/V2 vehicle speeds, A1 acceleration -----------------------------------


def test_faster_than_the_backward_record_is_review_not_rejection() -> None:
    v = check(make_track(4.7, n=1300, speed_cv=0.03))  # 5 km at 4.7 m/s (record 4.36)
    assert "best_effort_review" in codes(v) or "best_effort_reject" in codes(v)
    assert v.status in {"review", "rejected"}
    assert "faster_than_world_record" not in codes(v)


def test_well_above_the_envelope_is_best_effort_reject() -> None:
    v = check(make_track(7.0, n=300, speed_cv=0.02))  # 2 km at 7 m/s
    f = flag(v, "best_effort_reject")
    assert f.points == 70 and not f.hard_fail and v.status == "rejected"


def test_faster_than_the_forward_world_record_is_a_hard_fail() -> None:
    v = check(make_track(8.6, n=1300, speed_cv=0.02))  # 11 km at 8.6 m/s
    f = flag(v, "faster_than_world_record")
    assert f.hard_fail and v.status == "rejected"
    assert num(f, "speed_mps") > 6.0
    assert {"distance", "index", "t", "duration_s"} <= set(f.evidence)


def test_walk_policy_has_slower_ceilings() -> None:
    track = make_track(3.4, n=1200, seed=4)
    assert check(track).status == "verified"
    walk = check(track, policy_for(Activity.BACKWARD_WALK))
    assert walk.status in {"review", "rejected"}
    assert codes(walk) & {"best_effort_review", "best_effort_reject"}


def test_car_segment_is_vehicle_speed_and_superhuman() -> None:
    speed = np.full(1200, 2.5)
    speed[400:520] = 15.0  # two minutes by car
    v = check(make_track(speed, n=1200, speed_cv=0.05))
    assert flag(v, "vehicle_speed").hard_fail
    assert flag(v, "superhuman_speed").hard_fail
    assert v.status == "rejected"


def test_short_fast_stretch_is_vehicle_speed_points_only() -> None:
    speed = np.full(1200, 2.5)
    speed[400:425] = 10.0  # 25 s at 10 m/s
    v = check(make_track(speed, n=1200, speed_cv=0.02))
    f = flag(v, "vehicle_speed")
    assert f.points == 70 and not f.hard_fail
    assert num(f, "duration_s") < 60
    assert "superhuman_speed" not in codes(v)


def test_violent_accelerations_score_15_each_capped_at_30() -> None:
    speed = np.full(1200, 2.0)
    for start in (300, 600, 900):
        speed[start : start + 3] = 16.0  # a teleporting spoofer: 2 -> 16 m/s and back
    v = check(make_track(speed, n=1200, speed_cv=0.05, noise_m=1.0))
    f = flag(v, "acceleration")
    assert num(f, "count") >= 2 and f.points == 30


# --- N1-N3 missing noise ----------------------------------------------------------------------


def simulator_track(n: int = 900) -> Track:
    t = T0 + np.arange(n, dtype=np.float64)
    lat = 52.0 + 2.8 * np.arange(n) / M_PER_DEG
    return Track.from_arrays(t, lat, np.full(n, 13.0), acc_m=np.full(n, 5.0))


def test_simulator_is_caught_by_missing_noise() -> None:
    v = check(simulator_track())
    assert {"no_speed_noise", "no_wobble", "constant_accuracy"} <= codes(v)
    assert v.score == 25 + 25 + 15 and v.status == "rejected"


def test_accuracy_exactly_zero_is_constant_accuracy() -> None:
    track = make_track(n=300)
    acc = track.acc_m.copy()
    acc[10] = 0.0
    assert flag(check(with_cols(track, acc_m=acc)), "constant_accuracy").points == 15


def test_honest_noise_does_not_trigger_noise_rules() -> None:
    v = check(make_track(2.8, n=1200))
    assert not codes(v) & {"no_speed_noise", "no_wobble", "constant_accuracy"}


# --- C1/C2 sensors, B1 backward check ---------------------------------------------------------


def test_low_cadence_at_running_speed_is_a_mismatch() -> None:
    v = check(make_track(3.0, n=600, cadence_spm=80.0))
    assert flag(v, "cadence_mismatch").points == 30
    assert "long_stride" in codes(v)  # 3 m/s at 80 steps/min is 2.25 m steps
    assert "cadence_mismatch" not in codes(check(make_track(3.0, n=600, cadence_spm=180.0)))


def test_long_strides_alone() -> None:
    v = check(make_track(3.0, n=600, cadence_spm=105.0))  # 1.7 m steps
    assert flag(v, "long_stride").points == 15 and "cadence_mismatch" not in codes(v)


@pytest.mark.parametrize(
    ("offset_deg", "code"),
    [(180.0, None), (0.0, "facing_forward"), (None, None)],
)
def test_backward_check_compares_device_azimuth_with_course(
    offset_deg: float | None, code: str | None
) -> None:
    v = check(make_track(2.5, n=600, facing_offset_deg=offset_deg))
    found = codes(v) & {"facing_forward", "partly_facing_forward"}
    assert found == ({code} if code else set())


def test_partly_facing_forward_scores_20() -> None:
    track = make_track(2.5, n=600, facing_offset_deg=180.0)
    heading = track.heading_deg.copy()
    heading[:210] = (heading[:210] + 180.0) % 360  # 35% of the time facing forward
    v = check(with_cols(track, heading_deg=heading))
    assert flag(v, "partly_facing_forward").points == 20
    heading[:400] = (track.heading_deg[:400] + 180.0) % 360
    assert flag(check(with_cols(track, heading_deg=heading)), "facing_forward").points == 40


def test_policy_for_each_activity() -> None:
    run, walk, race = (policy_for(a) for a in Activity)
    assert walk.records[0].review_mps < run.records[0].review_mps
    assert race.mock_hard_fail and race.live_signals and not run.mock_hard_fail
    assert [r.distance_m for r in run.records][-1] == 42195.0


# --- robustness: any input gives a verdict -----------------------------------------------------

ANY_FLOAT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-200, 200),
    st.sampled_from([0.0, -1.0, 91.0, 5.0, 20.0, 20.1]),
)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(ANY_FLOAT, st.floats(T0, T0 + 600)),
            st.one_of(ANY_FLOAT, st.floats(51.99, 52.01)),
            st.one_of(ANY_FLOAT, st.floats(12.99, 13.01)),
            ANY_FLOAT,
            ANY_FLOAT,
            st.booleans(),
        ),
        max_size=40,
    ),
    now=st.one_of(ANY_FLOAT, st.just(NOW)),
)
def test_any_input_gives_a_verdict_never_an_exception(
    rows: list[tuple[float, float, float, float, float, bool]], now: float
) -> None:
    cols: list[list[float]] = [[float(r[k]) for r in rows] for k in range(6)]
    track = Track.from_arrays(
        cols[0],
        cols[1],
        cols[2],
        acc_m=cols[3],
        heading_deg=cols[4],
        cadence_spm=cols[4],
        speed_mps=cols[3],
        mock=np.array(cols[5], dtype=np.bool_),
    )
    v = check_track(track, now=now)
    assert v.status in {"verified", "review", "rejected"}
    assert math.isfinite(v.distance_m) and v.distance_m >= 0
    json.dumps(v.to_dict())
