"""The synthetic track generator: deterministic, realistic when honest, true to each cheat."""

from __future__ import annotations

import numpy as np
import pytest

from game.generate import (
    CHEATER_PROFILES,
    EXPECTATIONS,
    HONEST_PROFILES,
    Device,
    Level,
    Profile,
    expected_codes,
    generate,
    generate_run,
    honest_track,
    record_speed_mps,
    runner_params,
)
from game.track import Track, angle_diff_deg, haversine_m, step_bearings_deg

START_T = 1_700_000_000.0


def _steps_m(track: Track) -> np.ndarray:
    return haversine_m(track.lat[:-1], track.lon[:-1], track.lat[1:], track.lon[1:])


def _phone_run(seed: int, level: Level = Level.RECREATIONAL) -> Track:
    rng = np.random.default_rng(seed)
    params = runner_params(rng, level, device=Device.PHONE)
    return honest_track(params, rng, START_T, 5000.0)


def _same(a: Track, b: Track) -> bool:
    fields = ("t", "lat", "lon", "acc_m", "heading_deg", "cadence_spm", "mock")
    return all(np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True) for f in fields)


@pytest.mark.parametrize("profile", list(Profile))
def test_every_profile_is_deterministic_for_a_seed(profile: Profile) -> None:
    a = generate(profile, 42, START_T, 3000.0)
    b = generate(profile, np.random.default_rng(42), START_T, 3000.0)
    assert _same(a, b)
    assert not _same(a, generate(profile, 43, START_T, 3000.0))


@pytest.mark.parametrize("profile", list(Profile))
def test_every_profile_has_increasing_times_and_an_expectation(profile: Profile) -> None:
    run = generate_run(profile, 7, START_T, 3000.0)
    assert len(run.track) > 20
    assert np.all(np.diff(run.track.t) > 0)
    assert profile in EXPECTATIONS
    assert (profile in HONEST_PROFILES) != bool(expected_codes(profile))


def test_runner_params_stay_in_the_pace_bands() -> None:
    rng = np.random.default_rng(1)
    for level, lo, hi in (
        (Level.WALKER, 0.9, 1.63),
        (Level.RECREATIONAL, 1.8, 3.0),
        (Level.TRAINED, 3.3, 4.3),
    ):
        speeds = [runner_params(rng, level).speed_mps for _ in range(300)]
        assert lo <= min(speeds) and max(speeds) <= hi
    half = [runner_params(rng, Level.TRAINED, distance_m=21097).speed_mps for _ in range(300)]
    assert max(half) < record_speed_mps(21097)


def test_honest_phone_run_covers_the_distance_with_realistic_noise() -> None:
    track = _phone_run(3)
    distance_m = float(_steps_m(track).sum())
    assert 4900 < distance_m < 5600  # raw 1 Hz sums overestimate a little
    acc = track.acc_m
    assert acc.min() >= 3.0 and acc.max() <= 15.0
    assert np.unique(acc).shape[0] > 10
    # 10 s speeds vary like a person's (PACE_RULES: a real city run showed CV 0.21).
    s = np.concatenate([[0.0], np.cumsum(_steps_m(track))])
    at = np.arange(track.t[0], track.t[-1], 10.0)
    v10 = np.diff(np.interp(at, track.t, s)) / 10.0
    moving = v10[v10 > 1.0]
    assert 0.05 < moving.std() / moving.mean() < 0.35


def test_position_steps_agree_with_the_device_speed() -> None:
    rng = np.random.default_rng(5)
    params = runner_params(rng, Level.RECREATIONAL, device=Device.PHONE)
    track = honest_track(params, rng, START_T, 3000.0)
    # Correlated GPS error barely moves from one second to the next, so steps track speed.
    step_v = _steps_m(track) / np.diff(track.t)
    assert abs(np.median(step_v) - np.median(track.speed_mps)) < 0.5


def test_route_turns() -> None:
    track = _phone_run(4)
    bearing = step_bearings_deg(track.lat, track.lon)
    at = np.arange(0, bearing.shape[0] - 60, 30)
    turns = np.abs(angle_diff_deg(bearing[at], bearing[at + 30]))
    assert np.nanmax(turns) > 45


def test_backward_runner_faces_away_from_the_course() -> None:
    track = _phone_run(6)
    off = np.abs(angle_diff_deg(track.heading_deg, track.course_deg))
    moving = track.speed_mps >= 1.5
    assert np.mean(off[moving] > 90) >= 0.85
    cadence = track.cadence_spm[moving]
    assert 160 <= np.median(cadence) <= 200
    step_m = np.median(track.speed_mps[moving] / (cadence / 60.0))
    assert step_m < 1.2  # short backward steps


def test_watch_uses_smart_recording_without_accuracy_or_azimuth() -> None:
    rng = np.random.default_rng(8)
    params = runner_params(rng, Level.RECREATIONAL, device=Device.WATCH)
    track = honest_track(params, rng, START_T, 5000.0)
    dt = np.diff(track.t)
    assert 4 <= np.median(dt) <= 10
    assert np.all(track.t == np.round(track.t))
    assert np.isnan(track.acc_m).all() and np.isnan(track.heading_deg).all()
    assert np.isfinite(track.hr_bpm).all()


def test_simulator_is_perfect() -> None:
    track = generate(Profile.SIMULATOR, 9, START_T, 4000.0)
    assert np.unique(track.acc_m).shape[0] == 1
    assert np.unique(np.round(track.speed_mps, 9)).shape[0] == 1
    assert np.all(np.diff(track.t) == 1.0)


def test_forward_runner_faces_the_course_at_forward_pace() -> None:
    track = generate(Profile.FORWARD_RUNNER, 10, START_T, 5000.0)
    off = np.abs(angle_diff_deg(track.heading_deg, track.course_deg))
    assert np.mean(off < 90) > 0.85
    assert np.median(track.speed_mps) > 3.3


def test_car_and_bike_move_at_vehicle_speeds() -> None:
    car = generate(Profile.CAR, 11, START_T, 5000.0)
    assert np.nanmax(car.speed_mps) > 10
    assert np.any((car.speed_mps > 9) & (car.cadence_spm == 0))
    bike = generate(Profile.BIKE, 12, START_T, 5000.0)
    assert np.median(bike.speed_mps) > 5.5 and np.median(bike.cadence_spm) < 100


def test_teleport_jumps_more_than_a_kilometre() -> None:
    track = generate(Profile.TELEPORT, 13, START_T, 5000.0)
    assert _steps_m(track).max() > 1000


def test_future_timestamps_lie_after_the_upload() -> None:
    run = generate_run(Profile.FUTURE_TIMESTAMPS, 14, START_T, 3000.0)
    assert run.track.t.min() > run.upload_t


def test_replay_copies_its_source_shifted_in_time() -> None:
    run = generate_run(Profile.REPLAY, 15, START_T, 3000.0)
    assert run.source is not None
    assert run.track.t[0] == START_T and run.source.t[0] < START_T - 86_000
    offset_m = haversine_m(run.track.lat, run.track.lon, run.source.lat, run.source.lon)
    assert np.median(offset_m) < 2.0
    assert np.array_equal(np.diff(run.track.t), np.diff(run.source.t))


def test_mock_location_is_flagged_by_the_os() -> None:
    assert generate(Profile.MOCK_LOCATION, 16, START_T, 2000.0).mock.all()


def test_cheater_profiles_are_the_complement_of_honest_ones() -> None:
    assert set(CHEATER_PROFILES) | set(HONEST_PROFILES) == set(Profile)
