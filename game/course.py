"""A race course: a line to follow, with a tolerance either side.

On a course, a runner's progress is how far along the line (its chainage) they have reached while
within `tolerance_m` of it, not how far they went: laps of the first 100 m, or a corner cut,
earn nothing. Progress may only move on as fast as a runner could: from where they were last seen
on the line, `REACH_M` plus `MAX_SPEED_MPS` for every second since their last fix, so a runner
who leaves the course and rejoins it further on is not credited the part they went round (they
are placed again when they come back where they left it), and an out-and-back course's return
leg is not taken for its way out.

The line is projected once onto a flat plane (east/north metres around its first point), exact to
well under a metre over a race's few kilometres. `locate` looks only at the segments within that
reach: a few per fix, in plain Python (no array call overhead per fix).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from game.errors import InvalidCommand
from game.track import EARTH_RADIUS_M

MIN_TOLERANCE_M, MAX_TOLERANCE_M = 5.0, 200.0
DEFAULT_TOLERANCE_M = 25.0
MAX_POINTS = 5_000
#: How far along the line one fix may move a runner, beyond MAX_SPEED_MPS x the seconds since
#: they were last on it.
REACH_M = 50.0
MAX_SPEED_MPS = 12.5  # faster than any human (the pace check's superhuman speed)
_M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0


@dataclass(frozen=True, slots=True)
class Course:
    """The course line as `(lat, lon)` points in running order, and the tolerance in metres."""

    line: tuple[tuple[float, float], ...]
    tolerance_m: float = DEFAULT_TOLERANCE_M

    @classmethod
    def of(cls, line: Iterable[Sequence[float]], tolerance_m: float) -> Course:
        """A checked course: 2 to 5,000 valid points, a tolerance of 5 to 200 m."""
        points = tuple((float(p[0]), float(p[1])) for p in line)
        if not 2 <= len(points) <= MAX_POINTS:
            raise InvalidCommand(f"a course line has 2 to {MAX_POINTS} points", code="bad_course")
        for lat, lon in points:
            if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):  # also refuses NaN
                raise InvalidCommand(
                    "a course point is [lat, lon] in degrees, in range", code="bad_course"
                )
        if not MIN_TOLERANCE_M <= tolerance_m <= MAX_TOLERANCE_M:
            raise InvalidCommand(
                f"a course tolerance is {MIN_TOLERANCE_M:g} to {MAX_TOLERANCE_M:g} m",
                code="bad_course",
            )
        return cls(points, float(tolerance_m))

    def to_dict(self) -> dict[str, Any]:
        return {"line": [list(p) for p in self.line], "tolerance_m": self.tolerance_m}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Course:
        return cls(tuple((float(a), float(b)) for a, b in data["line"]), float(data["tolerance_m"]))


class CourseLine:
    """A course's geometry, for locating fixes along it."""

    __slots__ = ("_cum", "_kx", "_lat0", "_lon0", "_segs", "length_m", "tolerance_m")

    def __init__(self, course: Course) -> None:
        lat0, lon0 = course.line[0]
        self._lat0, self._lon0 = lat0, lon0
        self._kx = _M_PER_DEG * math.cos(math.radians(lat0))
        self.tolerance_m = course.tolerance_m
        xy = [self._xy(lat, lon) for lat, lon in course.line]
        cum = [0.0]
        segs: list[tuple[float, float, float, float, float]] = []  # x, y, dx, dy, length
        for (ax, ay), (bx, by) in pairwise(xy):
            length = math.hypot(bx - ax, by - ay)
            if length <= 0.0:  # a repeated point adds no segment
                continue
            segs.append((ax, ay, bx - ax, by - ay, length))
            cum.append(cum[-1] + length)
        self._segs = segs
        self._cum = cum
        self.length_m = cum[-1]

    def _xy(self, lat: float, lon: float) -> tuple[float, float]:
        return (lon - self._lon0) * self._kx, (lat - self._lat0) * _M_PER_DEG

    def locate(self, lat: float, lon: float, from_m: float, reach_m: float) -> tuple[float, float]:
        """`(along_m, off_m)`: where on the line a position is, looking from `from_m` back by
        the tolerance and ahead by `reach_m`. Of the places within the tolerance, the nearest
        at or after `from_m` (a runner goes on from where they were: at the turn of an
        out-and-back, the way back), else the nearest before it; when none is, the nearest
        place and how far off it the position is. Only that stretch of the line counts:
        `along_m` never passes `from_m + reach_m`."""
        segs, cum = self._segs, self._cum
        if not segs:
            return 0.0, math.inf
        lo, hi = max(0.0, from_m - self.tolerance_m), from_m + reach_m
        first = max(0, bisect_right(cum, lo) - 1)
        last = min(len(segs) - 1, bisect_left(cum, hi))
        px, py = self._xy(lat, lon)
        tol = self.tolerance_m
        ahead: tuple[float, float] | None = None  # nearest (along, off) on the line, >= from_m
        behind: tuple[float, float] | None = None  # nearest (along, off) on it, before from_m
        best = (math.inf, 0.0)  # (off, along)
        for i in range(first, last + 1):
            ax, ay, dx, dy, length = segs[i]
            u = ((px - ax) * dx + (py - ay) * dy) / (length * length)
            # the nearest point of the segment's part within [lo, hi] of the line
            u_lo, u_hi = max(0.0, (lo - cum[i]) / length), min(1.0, (hi - cum[i]) / length)
            u = u_lo if u < u_lo else u_hi if u > u_hi else u
            along = cum[i] + u * length
            off = math.hypot(px - (ax + u * dx), py - (ay + u * dy))
            if off <= tol:
                if along >= from_m:
                    if ahead is None or along < ahead[0]:
                        ahead = (along, off)
                elif behind is None or along > behind[0]:
                    behind = (along, off)
            if off < best[0]:
                best = (off, along)
        if ahead is not None:
            return ahead
        if behind is not None:
            return behind
        return best[1], best[0]
