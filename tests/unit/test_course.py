"""Races on a course line with a tolerance: progress is along the line, not the distance run."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from itertools import pairwise

import numpy as np
import pytest

from game import races
from game.course import Course, CourseLine
from game.errors import InvalidCommand
from game.races import RaceLive
from game.track import EARTH_RADIUS_M, Fix

M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
LAT0, LON0 = 52.0, 13.0
KX = M_PER_DEG * math.cos(math.radians(LAT0))
GUN = 1_780_000_000.0


def point(east_m: float, north_m: float) -> tuple[float, float]:
    return LAT0 + north_m / M_PER_DEG, LON0 + east_m / KX


def path(*corners: tuple[float, float], step_m: float = 3.0) -> list[tuple[float, float]]:
    """East/north metres along straight legs between `corners`, every `step_m`."""
    out = [corners[0]]
    for (ax, ay), (bx, by) in pairwise(corners):
        n = max(1, round(math.hypot(bx - ax, by - ay) / step_m))
        out += [(ax + (bx - ax) * k / n, ay + (by - ay) * k / n) for k in range(1, n + 1)]
    return out


def run(
    legs: list[tuple[float, float]], speed_mps: float = 3.0, seed: int = 1, noise_m: float = 2.0
) -> list[Fix]:
    """A runner along `legs` (metres) at `speed_mps`, one fix a second, from the gun."""
    rng = np.random.default_rng(seed)
    pts = path(*legs, step_m=speed_mps)
    return [
        Fix(GUN + k, *point(x + rng.normal(0, noise_m), y + rng.normal(0, noise_m)), acc_m=5.0)
        for k, (x, y) in enumerate(pts)
    ]


def course(*corners: tuple[float, float], tolerance_m: float = 25.0) -> Course:
    return Course.of([point(x, y) for x, y in corners], tolerance_m)


def race(line: Course, distance_m: float, fixes: list[Fix]) -> tuple[RaceLive, list[str]]:
    live = RaceLive(distance_m, GUN)
    live.course = CourseLine(line)
    codes = [f.code for fix in fixes for f in live.add_fix("ann", fix, fix.t + 1.0).flags]
    return live, codes


@pytest.mark.parametrize(
    ("line", "tolerance", "message"),
    [
        ([(52.0, 13.0)], 25.0, "2 to"),
        ([(52.0, 13.0), (95.0, 13.0)], 25.0, "in range"),
        ([(52.0, 13.0), (math.nan, 13.0)], 25.0, "in range"),
        ([(52.0, 13.0), (52.01, 13.0)], 2.0, "tolerance"),
        ([(52.0, 13.0), (52.01, 13.0)], 500.0, "tolerance"),
    ],
)
def test_a_bad_course_is_refused(
    line: list[tuple[float, float]], tolerance: float, message: str
) -> None:
    with pytest.raises(InvalidCommand, match=message) as err:
        Course.of(line, tolerance)
    assert err.value.code == "bad_course"


def test_the_line_is_measured_along_its_legs() -> None:
    line = CourseLine(course((0, 0), (0, 500), (300, 500)))
    assert line.length_m == pytest.approx(800.0, abs=0.5)
    assert line.locate(*point(10, 250), 240.0, 60.0) == pytest.approx((250.0, 10.0), abs=0.5)
    along, off = line.locate(*point(150, 560), 640.0, 60.0)
    assert (along, off) == pytest.approx((650.0, 60.0), abs=0.5)  # off the line: how far


def test_a_course_shorter_than_the_race_is_refused() -> None:
    line = course((0, 0), (0, 500))
    when = datetime.fromtimestamp(GUN - 3600, UTC)

    def schedule(distance_m: float) -> races.ScheduleRace:
        return races.ScheduleRace("r1", "Park line", distance_m, when, 10, "org", course=line)

    with pytest.raises(InvalidCommand, match="shorter than the race"):
        races.decide(races.initial_state(), schedule(800.0), when)
    [scheduled] = races.decide(races.initial_state(), schedule(500.0), when)
    state = races.evolve(races.initial_state(), scheduled)
    assert races.course_of(state) == line


def test_a_runner_on_the_line_finishes_at_the_race_distance_along_it() -> None:
    line = course((0, 0), (0, 500), (300, 500))
    live, codes = race(line, 800.0, run([(0, 0), (0, 500), (300, 500)], speed_mps=3.0))
    [row] = live.standings(("ann",))
    assert row.status == "finished" and row.time_s == pytest.approx(800 / 3.0, abs=3.0)
    assert "off_course" not in codes


def test_laps_of_the_start_and_a_cut_corner_earn_nothing() -> None:
    line = course((0, 0), (0, 500), (300, 500))
    laps = run([(0, 0), (0, 100), (0, 0), (0, 100), (0, 0), (0, 100), (0, 0), (0, 100)])
    live, _ = race(line, 800.0, laps)
    assert live.standings(("ann",))[0].distance_m <= 110.0  # the free route credits ~700 m
    cut = run([(0, 0), (0, 100), (300, 500)])  # across the corner to the finish
    live, codes = race(line, 800.0, cut)
    [row] = live.standings(("ann",))
    assert row.status == "running" and row.distance_m < 200.0
    assert "off_course" in codes


def test_out_and_back_a_runner_who_turns_early_is_not_credited_the_way_back() -> None:
    line = course((0, 0), (0, 400), (0, 0))
    honest, _ = race(line, 800.0, run([(0, 0), (0, 400), (0, -10)]))  # through the line
    assert honest.standings(("ann",))[0].status == "finished"
    early, _ = race(line, 800.0, run([(0, 0), (0, 200), (0, 0)]))
    [row] = early.standings(("ann",))
    assert row.status == "running" and row.distance_m < 260.0
