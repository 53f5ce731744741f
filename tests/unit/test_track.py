"""Track geometry: haversine, bearings, cleaned distance, splits and best efforts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from game.track import (
    EARTH_RADIUS_M,
    STANDARD_DISTANCES_M,
    Fix,
    Track,
    bearings_deg,
    best_efforts,
    cleaned_distance_m,
    cleaned_steps,
    elapsed_s,
    haversine_m,
    moving_s,
    splits_per_km,
    step_bearings_deg,
    step_distances_m,
    step_speeds_mps,
    unit_vectors,
    xyz_distance_m,
    xyz_step_bearings_deg,
)

M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
T0 = 1_700_000_000.0


def make_line(
    speed_mps: float = 3.0,
    n: int = 600,
    heading_deg: float = 90.0,
    noise_m: float = 0.0,
    acc_m: float = 5.0,
    seed: int = 1,
) -> Track:
    """A straight run at constant speed from (52, 13), optional white position noise."""
    rng = np.random.default_rng(seed)
    t = T0 + np.arange(n, dtype=np.float64)
    s = speed_mps * np.arange(n)
    north = s * math.cos(math.radians(heading_deg)) + rng.normal(0, noise_m, n)
    east = s * math.sin(math.radians(heading_deg)) + rng.normal(0, noise_m, n)
    lat = 52.0 + north / M_PER_DEG
    lon = 13.0 + east / (M_PER_DEG * math.cos(math.radians(52.0)))
    return Track.from_arrays(t, lat, lon, acc_m=np.full(n, acc_m))


def test_haversine_one_degree_of_latitude_is_111_km() -> None:
    d = haversine_m(np.array([0.0]), np.array([0.0]), np.array([1.0]), np.array([0.0]))
    assert d[0] == pytest.approx(M_PER_DEG, rel=1e-12)


def test_haversine_zero_and_antipodes() -> None:
    d = haversine_m(
        np.array([10.0, 0.0]), np.array([20.0, 0.0]), np.array([10.0, 0.0]), np.array([20.0, 180.0])
    )
    assert d[0] == 0.0
    assert d[1] == pytest.approx(math.pi * EARTH_RADIUS_M, rel=1e-12)


def test_unit_vector_distance_equals_haversine() -> None:
    rng = np.random.default_rng(3)
    lat = rng.uniform(-80, 80, 200)
    lon = rng.uniform(-180, 180, 200)
    lat2 = lat + rng.normal(0, 0.001, 200)
    lon2 = lon + rng.normal(0, 0.001, 200)
    u = unit_vectors(np.concatenate((lat, lat2)), np.concatenate((lon, lon2)))
    i = np.arange(200)
    np.testing.assert_allclose(
        xyz_distance_m(u, i, i + 200), haversine_m(lat, lon, lat2, lon2), rtol=1e-9, atol=1e-6
    )


def test_bearings_point_to_the_compass() -> None:
    z = np.zeros(4)
    b = bearings_deg(z, z, np.array([1.0, 0.0, -1.0, 0.0]), np.array([0.0, 1.0, 0.0, -1.0]))
    np.testing.assert_allclose(b, [0.0, 90.0, 180.0, 270.0], atol=1e-9)


def test_step_geometry_of_a_straight_line() -> None:
    track = make_line(speed_mps=3.0, n=10, heading_deg=90.0)
    np.testing.assert_allclose(step_distances_m(track.lat, track.lon), 3.0, rtol=1e-3)
    np.testing.assert_allclose(step_bearings_deg(track.lat, track.lon), 90.0, atol=0.01)
    np.testing.assert_allclose(step_speeds_mps(track.t, track.lat, track.lon), 3.0, rtol=1e-3)


def test_step_speed_is_nan_for_non_increasing_time() -> None:
    speeds = step_speeds_mps(np.array([0.0, 0.0, 1.0]), np.zeros(3), np.array([0.0, 1e-4, 2e-4]))
    assert math.isnan(speeds[0]) and math.isfinite(speeds[1])


def test_cleaned_distance_of_a_clean_line_is_exact_within_half_a_percent() -> None:
    track = make_line(speed_mps=3.0, n=601)
    assert cleaned_distance_m(track) == pytest.approx(1800.0, rel=0.005)


def test_cleaned_distance_of_a_noisy_line_is_not_inflated() -> None:
    track = make_line(speed_mps=2.5, n=1201, noise_m=3.0, acc_m=5.0)
    raw = float(step_distances_m(track.lat, track.lon).sum())
    clean = cleaned_distance_m(track)
    assert raw > 3500  # raw 1 Hz steps inflate badly
    assert clean == pytest.approx(3000.0, rel=0.06)


def test_standing_still_with_gps_noise_credits_almost_nothing() -> None:
    track = make_line(speed_mps=0.0, n=600, noise_m=3.0, acc_m=5.0)
    raw = float(step_distances_m(track.lat, track.lon).sum())
    assert raw > 1500
    assert cleaned_distance_m(track) < 40.0


def test_moving_and_elapsed_time() -> None:
    moving = make_line(speed_mps=3.0, n=301)
    sigma = np.full(301, 5.0)
    steps = cleaned_steps(moving.t, moving.lat, moving.lon, sigma, np.ones(300, np.bool_))
    assert elapsed_s(moving.t) == 300.0
    assert moving_s(moving.t, steps.moving) == pytest.approx(300.0)
    still = make_line(speed_mps=0.0, n=301)
    steps = cleaned_steps(still.t, still.lat, still.lon, sigma, np.ones(300, np.bool_))
    assert moving_s(still.t, steps.moving) == 0.0
    assert elapsed_s(np.array([5.0])) == 0.0


def test_splits_per_km_of_an_even_pace() -> None:
    t = np.arange(0.0, 1001.0)
    cum = 3.0 * t  # 3 km in 1000 s
    splits = splits_per_km(cum, t)
    np.testing.assert_allclose(splits, [1000 / 3] * 3, rtol=1e-9)


def test_best_efforts_of_an_even_pace_and_of_a_fast_middle() -> None:
    t = np.arange(0.0, 2001.0)
    speed = np.where((t >= 500) & (t < 600), 6.0, 3.0)[:-1]
    cum = np.concatenate(([0.0], np.cumsum(speed)))
    best = best_efforts(cum, t)
    assert set(best) == {100.0, 200.0, 400.0, 800.0, 1609.344, 5000.0}
    assert best[100.0].duration_s == pytest.approx(100 / 6.0)
    assert best[400.0].duration_s == pytest.approx(400 / 6.0)
    assert best[800.0].duration_s == pytest.approx(100 + 200 / 3.0)
    assert best[5000.0].speed_mps < 3.2


def test_best_efforts_skip_distances_not_covered() -> None:
    assert best_efforts(np.array([0.0, 50.0]), np.array([0.0, 10.0])) == {}
    assert "marathon" in STANDARD_DISTANCES_M


def test_fix_round_trip_and_slice() -> None:
    fixes = [Fix(T0, 52.0, 13.0, acc_m=4.0), Fix(T0 + 1, 52.0001, 13.0, mock=True)]
    track = Track.from_fixes(fixes)
    assert track.fixes() == fixes
    assert len(track.slice(1, 2)) == 1
    assert track.slice(1, 2).fix(0) == fixes[1]


def test_bearings_from_unit_vectors_match_the_formula() -> None:
    rng = np.random.default_rng(9)
    lat = np.cumsum(rng.normal(0, 1e-4, 300)) + 45.0
    lon = np.cumsum(rng.normal(0, 1e-4, 300)) - 70.0
    got = xyz_step_bearings_deg(unit_vectors(lat, lon))
    want = step_bearings_deg(lat, lon)
    assert float(np.max(np.abs((got - want + 180.0) % 360.0 - 180.0))) < 1e-6
