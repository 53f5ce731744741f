"""Privacy zones cut fixes from shared views; the visibility rules."""

from __future__ import annotations

import numpy as np
import pytest

from game.errors import DomainError
from game.privacy import (
    MAX_ZONES,
    Visibility,
    Zone,
    check_zones,
    hidden,
    mask_track,
    may_see_activities,
    may_see_shared_track,
    visible_indices,
)
from game.track import Track, haversine_m

HOME = (52.5200, 13.4050)
M_PER_DEG_LAT = 111_195.0


def _line(start_lat: float, n: int, step_m: float, lon: float = HOME[1]) -> Track:
    """A straight northward track of `n` fixes, one per second, `step_m` apart."""
    lat = start_lat + np.arange(n) * step_m / M_PER_DEG_LAT
    return Track.from_arrays(
        1.7e9 + np.arange(n, dtype=np.float64), lat, np.full(n, lon), hr_bpm=np.arange(n)
    )


def test_no_zones_keeps_every_fix() -> None:
    track = _line(HOME[0], 50, 10.0)
    assert len(mask_track(track, [])) == 50
    assert visible_indices(track, []).tolist() == list(range(50))


def test_start_and_end_inside_a_zone_are_hidden() -> None:
    # out and back from home: 0 m -> 2000 m -> 0 m
    out = HOME[0] + np.arange(201) * 10.0 / M_PER_DEG_LAT
    lat = np.concatenate([out, out[::-1][1:]])
    n = lat.shape[0]
    track = Track.from_arrays(1.7e9 + np.arange(n), lat, np.full(n, HOME[1]))
    zone = Zone(HOME[0], HOME[1], 200.0)
    masked = mask_track(track, [zone])
    d = haversine_m(
        masked.lat, masked.lon, np.full(len(masked), HOME[0]), np.full(len(masked), HOME[1])
    )
    assert len(masked) > 0
    assert np.all(d > 200.0)  # nothing of the zone's surroundings shows
    assert masked.t[0] > track.t[0] and masked.t[-1] < track.t[-1]  # start and end gone
    kept = visible_indices(track, [zone])
    assert kept[0] > 0 and kept[-1] < n - 1
    assert np.array_equal(masked.t, track.t[kept])


def test_every_field_follows_the_mask() -> None:
    track = _line(HOME[0], 100, 9.99)
    masked = mask_track(track, [Zone(HOME[0], HOME[1], 100.0)])
    kept = visible_indices(track, [Zone(HOME[0], HOME[1], 100.0)])
    assert np.array_equal(masked.hr_bpm, track.hr_bpm[kept])
    assert np.array_equal(masked.lat, track.lat[kept])
    assert masked.mock.dtype == np.bool_ and len(masked.mock) == len(kept)
    assert kept[0] == 11  # fix 10 (99.9 m) is inside, fix 11 (109.9 m) is not


def test_a_zone_in_the_middle_cuts_a_gap_and_any_zone_counts() -> None:
    track = _line(HOME[0], 300, 10.0)  # 0 .. 2990 m north
    middle = (HOME[0] + 1500.0 / M_PER_DEG_LAT, HOME[1])
    zones = [Zone(*middle, 100.0), Zone(HOME[0] + 2900.0 / M_PER_DEG_LAT, HOME[1], 150.0)]
    mask = hidden(track.lat, track.lon, zones)
    assert not mask[0] and mask[150] and not mask[139] and mask[299]
    assert len(mask_track(track, zones)) == 300 - int(mask.sum())


def test_a_track_far_from_every_zone_is_unchanged() -> None:
    track = _line(48.0, 20, 10.0, lon=2.0)
    assert len(mask_track(track, [Zone(*HOME, 1000.0)])) == 20


def test_positions_without_coordinates_are_hidden_when_zones_exist() -> None:
    lat = np.array([48.0, np.nan, 48.001])
    lon = np.array([2.0, 2.0, 2.0])
    assert hidden(lat, lon, [Zone(*HOME, 100.0)]).tolist() == [False, True, False]
    assert hidden(lat, lon, []).tolist() == [False, False, False]


@pytest.mark.parametrize("radius", [99.9, 1000.1, float("nan"), -5.0])
def test_radius_is_100_to_1000_m(radius: float) -> None:
    with pytest.raises(DomainError):
        Zone(HOME[0], HOME[1], radius)


@pytest.mark.parametrize(("lat", "lon"), [(91.0, 0.0), (0.0, 181.0), (float("inf"), 0.0)])
def test_centre_must_be_a_place(lat: float, lon: float) -> None:
    with pytest.raises(DomainError):
        Zone(lat, lon, 200.0)


def test_at_most_five_zones() -> None:
    check_zones([Zone(*HOME, 100.0)] * MAX_ZONES)
    with pytest.raises(DomainError):
        check_zones([Zone(*HOME, 100.0)] * (MAX_ZONES + 1))


@pytest.mark.parametrize(
    ("visibility", "clubmate_list", "stranger_list", "clubmate_track"),
    [
        (Visibility.EVERYONE, True, True, True),
        (Visibility.CLUB, True, False, True),
        (Visibility.NOBODY, False, False, False),
    ],
)
def test_visibility_rules(
    visibility: Visibility, clubmate_list: bool, stranger_list: bool, clubmate_track: bool
) -> None:
    def see(**who: bool) -> tuple[bool, bool]:
        args = {"is_owner": False, "is_moderator": False, "shares_club": False, **who}
        return may_see_activities(visibility, **args), may_see_shared_track(visibility, **args)

    assert see(is_owner=True) == (True, True)
    assert see(is_moderator=True) == (True, True)
    assert see(shares_club=True) == (clubmate_list, clubmate_track)
    assert see() == (stranger_list, False)  # strangers never get a track
