"""GPS fixes and tracks: immutable value objects over numpy arrays.

A `Track` is a struct of arrays (one float64 array per field, NaN where a field is missing),
so the geometry and the pace rules run vectorised. A `Fix` is one row, for the live driver and
for building tracks by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Fields a fix may carry beside time and position, in the order `Track` stores them.
OPTIONAL_FIELDS: tuple[str, ...] = (
    "acc_m",
    "speed_mps",
    "course_deg",
    "course_acc_deg",
    "heading_deg",
    "cadence_spm",
    "hr_bpm",
    "ele_m",
)


@dataclass(frozen=True, slots=True)
class Fix:
    """One GPS fix. `t` is Unix seconds (UTC); angles are degrees clockwise from north."""

    t: float
    lat: float
    lon: float
    acc_m: float | None = None  # horizontal accuracy, 68% radius
    speed_mps: float | None = None  # speed reported by the device
    course_deg: float | None = None  # direction of travel reported by the device
    course_acc_deg: float | None = None
    heading_deg: float | None = None  # device azimuth (where the phone faces)
    cadence_spm: float | None = None  # steps per minute
    hr_bpm: float | None = None
    ele_m: float | None = None
    mock: bool = False  # Android isMock() / iOS isSimulatedBySoftware


def _column(values: Iterable[float | None]) -> FloatArray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


@dataclass(frozen=True, slots=True, eq=False)
class Track:
    """A sequence of fixes as parallel float64 arrays; missing optional values are NaN."""

    t: FloatArray
    lat: FloatArray
    lon: FloatArray
    acc_m: FloatArray
    speed_mps: FloatArray
    course_deg: FloatArray
    course_acc_deg: FloatArray
    heading_deg: FloatArray
    cadence_spm: FloatArray
    hr_bpm: FloatArray
    ele_m: FloatArray
    mock: BoolArray

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @classmethod
    def from_fixes(cls, fixes: Sequence[Fix]) -> Track:
        """Build a track from fixes, in the order given (validation happens in the pace check)."""
        return cls(
            t=_column(f.t for f in fixes),
            lat=_column(f.lat for f in fixes),
            lon=_column(f.lon for f in fixes),
            acc_m=_column(f.acc_m for f in fixes),
            speed_mps=_column(f.speed_mps for f in fixes),
            course_deg=_column(f.course_deg for f in fixes),
            course_acc_deg=_column(f.course_acc_deg for f in fixes),
            heading_deg=_column(f.heading_deg for f in fixes),
            cadence_spm=_column(f.cadence_spm for f in fixes),
            hr_bpm=_column(f.hr_bpm for f in fixes),
            ele_m=_column(f.ele_m for f in fixes),
            mock=np.array([bool(f.mock) for f in fixes], dtype=np.bool_),
        )

    @classmethod
    def from_arrays(
        cls,
        t: npt.ArrayLike,
        lat: npt.ArrayLike,
        lon: npt.ArrayLike,
        *,
        mock: npt.ArrayLike | None = None,
        **optional: npt.ArrayLike | None,
    ) -> Track:
        """Build a track from arrays; optional fields left out are all-NaN."""
        unknown = set(optional) - set(OPTIONAL_FIELDS)
        if unknown:
            raise TypeError(f"unknown track fields: {sorted(unknown)}")
        t_arr = np.asarray(t, dtype=np.float64).reshape(-1)
        n = t_arr.shape[0]

        def col(values: npt.ArrayLike | None) -> FloatArray:
            if values is None:
                return np.full(n, np.nan)
            arr = np.asarray(values, dtype=np.float64).reshape(-1)
            if arr.shape[0] != n:
                raise ValueError("every track field must have one value per fix")
            return arr

        cols = {name: col(optional.get(name)) for name in OPTIONAL_FIELDS}
        mock_arr = np.zeros(n, dtype=np.bool_) if mock is None else np.asarray(mock, dtype=np.bool_)
        if mock_arr.shape[0] != n:
            raise ValueError("every track field must have one value per fix")
        return cls(t=t_arr, lat=col(lat), lon=col(lon), mock=mock_arr, **cols)

    def fix(self, i: int) -> Fix:
        """Row `i` as a `Fix` (NaN becomes None)."""

        def val(arr: FloatArray) -> float | None:
            v = float(arr[i])
            return None if np.isnan(v) else v

        return Fix(
            t=float(self.t[i]),
            lat=float(self.lat[i]),
            lon=float(self.lon[i]),
            mock=bool(self.mock[i]),
            **{name: val(getattr(self, name)) for name in OPTIONAL_FIELDS},
        )

    def fixes(self) -> list[Fix]:
        return [self.fix(i) for i in range(len(self))]

    def slice(self, start: int, stop: int) -> Track:
        """Fixes `start` (inclusive) to `stop` (exclusive) as a new track."""
        return Track(
            **{
                name: getattr(self, name)[start:stop]
                for name in ("t", "lat", "lon", "mock", *OPTIONAL_FIELDS)
            }
        )


# --------------------------------------------------------------------------------------------
# Vectorised geometry. Every function takes plain float64 arrays (or a `Track`) and never loops
# per fix in Python, so a million fixes take milliseconds.
# --------------------------------------------------------------------------------------------

#: Mean Earth radius (IUGG), metres. Haversine with it is within 0.5% of the ellipsoid.
EARTH_RADIUS_M = 6371008.8

#: Standard best-effort distances, metres.
STANDARD_DISTANCES_M: dict[str, float] = {
    "100m": 100.0,
    "200m": 200.0,
    "400m": 400.0,
    "800m": 800.0,
    "mile": 1609.344,
    "5k": 5000.0,
    "10k": 10000.0,
    "half": 21097.5,
    "marathon": 42195.0,
}

IntArray = npt.NDArray[np.int64]


def haversine_m(
    lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray
) -> FloatArray:
    """Great-circle distance in metres between paired points (degrees)."""
    p1 = np.radians(lat1)
    p2 = np.radians(lat2)
    dphi = p2 - p1
    dlam = np.radians(lon2 - lon1)
    a = np.sin(dphi * 0.5) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlam * 0.5) ** 2
    return np.asarray(2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def bearings_deg(
    lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray
) -> FloatArray:
    """Initial bearing in degrees [0, 360) clockwise from north from point 1 to point 2."""
    p1 = np.radians(lat1)
    p2 = np.radians(lat2)
    dlam = np.radians(lon2 - lon1)
    y = np.sin(dlam) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dlam)
    return np.asarray(np.degrees(np.arctan2(y, x)) % 360.0)


def _mod360(x: FloatArray) -> FloatArray:
    """`x % 360.0`, bit for bit, without the slow floor-mod on the common range [-360, 360]."""
    if np.all(np.abs(x) <= 360.0):  # NaN fails the test and takes the general path
        # fmod is exact, so inside the range the floor-mod is x, or x + 360 rounded, or +0.0
        out = np.where(x < 0.0, x + 360.0, x)
        out += 0.0  # -0.0 -> +0.0, as the floor-mod returns
        return np.asarray(out)
    return np.asarray(x % 360.0)


def angle_diff_deg(a_deg: FloatArray, b_deg: FloatArray) -> FloatArray:
    """Absolute smallest difference between two angles, in degrees [0, 180]."""
    d = np.abs(_mod360(np.asarray(a_deg - b_deg)))
    return np.asarray(np.minimum(d, 360.0 - d))


def step_distances_m(lat: FloatArray, lon: FloatArray) -> FloatArray:
    """Haversine length of each step between consecutive fixes (n - 1 values)."""
    return haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])


def step_bearings_deg(lat: FloatArray, lon: FloatArray) -> FloatArray:
    """Bearing of each step between consecutive fixes (n - 1 values)."""
    return bearings_deg(lat[:-1], lon[:-1], lat[1:], lon[1:])


def step_speeds_mps(t: FloatArray, lat: FloatArray, lon: FloatArray) -> FloatArray:
    """Raw speed of each step; NaN where the time step is not positive."""
    dt = np.diff(t)
    d = step_distances_m(lat, lon)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(dt > 0, d / np.where(dt > 0, dt, 1.0), np.nan))


def segment_bounds(n: int, breaks: BoolArray) -> tuple[IntArray, IntArray]:
    """First and last fix index of each fix's segment; `breaks[k]` cuts between k and k+1."""
    if not breaks.any():
        return np.zeros(n, dtype=np.int64), np.full(n, n - 1, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], breaks)))
    seg_id = np.cumsum(np.concatenate(([0], breaks.astype(np.int64, copy=False))))
    ends = np.concatenate((starts[1:] - 1, [n - 1]))
    return starts[seg_id].astype(np.int64, copy=False), ends[seg_id].astype(np.int64, copy=False)


def window_bounds(
    t: FloatArray,
    lo_t: FloatArray,
    hi_t: FloatArray,
    seg_first: IntArray,
    seg_last: IntArray,
) -> tuple[IntArray, IntArray]:
    """Indices of the first fix at or after `lo_t` and the last at or before `hi_t`, in-segment."""
    a = t.searchsorted(lo_t, side="left").astype(np.int64, copy=False)
    b = t.searchsorted(hi_t, side="right").astype(np.int64, copy=False) - 1
    return np.maximum(a, seg_first), np.minimum(b, seg_last)


class TimeIndex:
    """`t.searchsorted(q, side)` for sorted finite times `t`, exact and about twice as fast.

    Buckets of half the mean sampling interval: a query's bucket gives the fixes in earlier
    buckets (all before it) at once, and a step or two of comparison settles the fixes sharing
    its bucket. Any monotone bucket function makes that exact, so float rounding in the bucket
    arithmetic never changes a result. Irregular tracks (crowded buckets) fall back to
    `searchsorted`. Queries must be finite and ascending (as window bounds of sorted times are).
    """

    __slots__ = ("_base", "_first", "_inv_h", "_pad", "_steps", "_top", "t")

    _MAX_STEPS = 3  # past this many fixes in one bucket, plain searchsorted is faster

    def __init__(self, t: FloatArray) -> None:
        self.t = t
        n = t.shape[0]
        self._steps = 0  # 0: use searchsorted
        self._base = 0.0
        self._inv_h = 0.0
        self._top = 0.0
        self._first = np.zeros(0, dtype=np.int64)
        self._pad = t
        span = float(t[-1] - t[0]) if n else 0.0
        if n < 32 or not 0.0 < span < np.inf:
            return
        buckets = 2 * n
        self._base = float(t[0])
        self._inv_h = buckets / span
        self._top = float(buckets)
        counts = np.bincount(self._keys(t), minlength=buckets + 1)
        steps = int(counts.max())
        if steps > self._MAX_STEPS:
            return
        first = np.empty(buckets + 2, dtype=np.int64)
        first[0] = 0
        np.cumsum(counts, out=first[1:])
        self._first = first  # first[c]: number of fixes in buckets before c
        self._pad = np.append(t, np.inf)
        self._steps = steps

    def _keys(self, q: FloatArray) -> IntArray:
        # Bucket of each (ascending) query: clamped to [0, top], then truncated (= floor there).
        # A monotone function of q, which is all that exactness needs.
        y = q - self._base
        y *= self._inv_h
        if y.shape[0]:
            if not y[0] >= 0.0:  # ascending: only the first few can be below
                np.maximum(y, 0.0, out=y)
            if not y[-1] <= self._top:  # ... and only the last few above
                np.minimum(y, self._top, out=y)
        return y.astype(np.int64)

    def search(self, q: FloatArray, side: str = "left") -> IntArray:
        """Same as `t.searchsorted(q, side)` (as int64), for finite ascending `q`."""
        if not self._steps:
            found = self.t.searchsorted(q, side="left" if side == "left" else "right")
            return found.astype(np.int64, copy=False)
        idx = self._first[self._keys(q)]
        before = np.less if side == "left" else np.less_equal
        for _ in range(self._steps):
            idx += before(self._pad[idx], q)
        return idx


Xyz = tuple[FloatArray, FloatArray, FloatArray]


_RAD_PER_DEG = np.pi / 180.0  # np.radians(x) is exactly x * (pi / 180)
_DEG_PER_RAD = 180.0 / np.pi


def unit_vectors(lat: FloatArray, lon: FloatArray) -> Xyz:
    """Positions as unit vectors on the sphere (x, y, z), for fast pairwise distances."""
    p = lat * _RAD_PER_DEG
    lam = lon * _RAD_PER_DEG
    cp = np.cos(p)
    x = np.cos(lam)
    x *= cp
    y = np.sin(lam)
    y *= cp
    return x, y, np.sin(p)


def _chord_to_m(sq: FloatArray) -> FloatArray:
    """Great-circle metres from squared chord lengths of unit vectors (consumes `sq`)."""
    np.sqrt(sq, out=sq)
    sq *= 0.5
    np.minimum(sq, 1.0, out=sq)
    np.arcsin(sq, out=sq)
    sq *= 2.0 * EARTH_RADIUS_M
    return sq


def xyz_distance_m(u: Xyz, i: IntArray | None, j: IntArray) -> FloatArray:
    """Great-circle distance between fixes i and j from unit vectors (equal to haversine).

    `i=None` stands for every fix in order (0 .. len(j) - 1), saving the gathers.
    """
    m = j.shape[0]
    if i is None:
        dx = u[0][j] - u[0][:m]
        dy = u[1][j] - u[1][:m]
        dz = u[2][j] - u[2][:m]
    else:
        dx = u[0][j] - u[0][i]
        dy = u[1][j] - u[1][i]
        dz = u[2][j] - u[2][i]
    dx *= dx
    dy *= dy
    dz *= dz
    dx += dy
    dx += dz
    return _chord_to_m(dx)


def xyz_steps_m(u: Xyz) -> FloatArray:
    """Great-circle length of each step between consecutive position vectors."""
    return xyz_lag_m(u, 1)


def xyz_lag_m(u: Xyz, lag: int) -> FloatArray:
    """Great-circle distance from each fix k to fix k + `lag` (n - lag values)."""
    dx = u[0][lag:] - u[0][:-lag]
    dy = u[1][lag:] - u[1][:-lag]
    dz = u[2][lag:] - u[2][:-lag]
    dx *= dx
    dy *= dy
    dz *= dz
    dx += dy
    dx += dz
    return _chord_to_m(dx)


def xyz_step_bearings_deg(u: Xyz, at: IntArray | None = None) -> FloatArray:
    """Bearing of each step between consecutive position vectors, degrees [0, 360).

    With `at`, only the steps at those indices (same values as the full result there).
    """
    if at is None:
        x, y, z = u[0][:-1], u[1][:-1], u[2][:-1]
        dx, dy, dz = u[0][1:] - x, u[1][1:] - y, u[2][1:] - z
    else:
        x, y, z = u[0][at], u[1][at], u[2][at]
        nxt = at + 1
        dx, dy, dz = u[0][nxt] - x, u[1][nxt] - y, u[2][nxt] - z
    east = x * dy - y * dx  # both components scaled by cos(lat) >= 0, so the angle is exact
    north = (x * x + y * y) * dz - z * (x * dx + y * dy)
    deg = np.arctan2(east, north)
    deg *= _DEG_PER_RAD
    # arctan2 is in [-pi, pi]: the floor-mod by 360 is x or x + 360 (and -0.0 -> +0.0)
    out = np.where(deg < 0.0, deg + 360.0, deg)
    out += 0.0
    return np.asarray(out)


def xyz_to_latlon(u: Xyz) -> tuple[FloatArray, FloatArray]:
    """Latitude and longitude (degrees) of (possibly non-unit) position vectors."""
    x, y, z = u
    return np.degrees(np.arctan2(z, np.hypot(x, y))), np.degrees(np.arctan2(y, x))


def smooth_positions(
    t: FloatArray,
    u: Xyz,
    half_window_s: float,
    seg_first: IntArray | None,
    seg_last: IntArray | None,
    times: TimeIndex | None = None,
) -> Xyz:
    """Centred moving mean of position vectors over +-`half_window_s`, never across a break.

    `seg_first = seg_last = None` says the track is one segment (no clamping needed).
    """
    ti = times or TimeIndex(t)
    a = ti.search(t - half_window_s, "left")
    b1 = ti.search(t + half_window_s, "right")  # b + 1
    if seg_first is not None and seg_last is not None:
        np.maximum(a, seg_first, out=a)
        np.minimum(b1, seg_last + 1, out=b1)
    count = (b1 - a).astype(np.float64)
    n = t.shape[0]
    csum = np.empty(n + 1)
    csum[0] = 0.0
    out = []
    for col in u:
        c0 = col[0]
        np.cumsum(col - c0, out=csum[1:])  # small offsets keep the cumulative sum precise
        mean = csum[b1]
        mean -= csum[a]
        mean /= count
        mean += c0
        out.append(mean)
    return out[0], out[1], out[2]


def _step_windows(
    times: TimeIndex,
    t_mid: FloatArray,
    half_s: float,
    k: IntArray,
    seg: tuple[IntArray, IntArray] | None,
) -> tuple[IntArray, IntArray]:
    """Per step k: fixes bounding +-`half_s` around its midpoint, in-segment, at least k..k+1."""
    a = times.search(t_mid - half_s, "left")
    b = times.search(t_mid + half_s, "right")
    b -= 1
    if seg is not None:
        np.maximum(a, seg[0], out=a)
        np.minimum(b, seg[1], out=b)
    np.minimum(a, k, out=a)
    b1 = k + 1
    np.maximum(b, b1, out=b)
    return a, b


@dataclass(frozen=True, slots=True)
class DistanceSettings:
    """Knobs of the cleaned-distance method (see `cleaned_steps`)."""

    smooth_half_window_s: float = 2.0
    chord_window_s: float = 6.0
    moving_window_s: float = 12.0
    moving_min_speed_mps: float = 0.3
    moving_acc_factor: float = 1.0


@dataclass(frozen=True, slots=True, eq=False)
class CleanedSteps:
    """Per-step results of the cleaned-distance method (n - 1 values each, cum_m has n)."""

    xyz: Xyz  # raw positions as unit vectors, one per fix
    xyz_s: Xyz  # smoothed positions
    speed_mps: FloatArray  # chord speed over the chord window
    moving: BoolArray
    credit_m: FloatArray
    cum_m: FloatArray
    seg_first: IntArray  # per fix: first and last fix of its segment (cut where not creditable)
    seg_last: IntArray
    times: TimeIndex  # for window look-ups on the same times


def cleaned_steps(
    t: FloatArray,
    lat: FloatArray,
    lon: FloatArray,
    sigma_m: FloatArray,
    creditable: BoolArray,
    settings: DistanceSettings | None = None,
    xyz: Xyz | None = None,
) -> CleanedSteps:
    """Distance credited per step, without noise inflation while standing still.

    Method: (1) positions are smoothed with a centred +-2 s moving mean inside each segment
    (a segment ends wherever `creditable` is false); (2) each step's speed is the chord speed
    between the smoothed positions about 6 s apart around it (sparse steps fall back to their own
    chord); (3) a step counts as moving only when the smoothed displacement over about 12 s beats
    both `moving_min_speed_mps` x time and `moving_acc_factor` x sqrt(sigma_a^2 + sigma_b^2),
    so GPS noise while standing still is not summed; (4) the credit is chord speed x dt.
    """
    cfg = settings or DistanceSettings()
    n = t.shape[0]
    if n < 2:
        empty = np.zeros(0)
        u0 = unit_vectors(lat, lon)
        idx = np.zeros(n, dtype=np.int64)
        return CleanedSteps(
            u0, u0, empty, np.zeros(0, np.bool_), empty, np.zeros(n), idx, idx, TimeIndex(t)
        )
    breaks = ~creditable
    seg_first, seg_last = segment_bounds(n, breaks)
    seg = (seg_first[:-1], seg_last[:-1]) if breaks.any() else None  # None: one segment
    u = unit_vectors(lat, lon) if xyz is None else xyz
    times = TimeIndex(t)
    if seg is None:
        u_s = smooth_positions(t, u, cfg.smooth_half_window_s, None, None, times)
    else:
        u_s = smooth_positions(t, u, cfg.smooth_half_window_s, seg_first, seg_last, times)
    k = np.arange(n - 1, dtype=np.int64)
    t_mid = t[:-1] + t[1:]
    t_mid *= 0.5
    dt = t[1:] - t[:-1]

    a, b = _step_windows(times, t_mid, cfg.chord_window_s / 2, k, seg)
    speed = xyz_distance_m(u_s, a, b)
    speed /= t[b] - t[a]

    ma, mb = _step_windows(times, t_mid, cfg.moving_window_s / 2, k, seg)
    disp = xyz_distance_m(u_s, ma, mb)
    s_a, s_b = sigma_m[ma], sigma_m[mb]
    s_a *= s_a
    s_b *= s_b
    s_a += s_b
    need_acc = np.sqrt(s_a, out=s_a)
    need_acc *= cfg.moving_acc_factor
    need_t = t[mb] - t[ma]
    need_t *= cfg.moving_min_speed_mps
    np.maximum(need_t, need_acc, out=need_t)
    moving = disp >= need_t
    moving &= creditable
    credit = speed * dt
    credit[~moving] = 0.0
    cum = np.empty(n)
    cum[0] = 0.0
    np.cumsum(credit, out=cum[1:])
    return CleanedSteps(u, u_s, speed, moving, credit, cum, seg_first, seg_last, times)


def elapsed_s(t: FloatArray) -> float:
    """Gun time: last minus first timestamp (0 for fewer than two fixes)."""
    return float(t[-1] - t[0]) if t.shape[0] >= 2 else 0.0


def moving_s(t: FloatArray, moving: BoolArray) -> float:
    """Total duration of the moving steps."""
    return float(np.sum(np.diff(t)[moving])) if t.shape[0] >= 2 else 0.0


def time_at_distance_s(cum_m: FloatArray, t: FloatArray, targets_m: FloatArray) -> FloatArray:
    """Interpolated time at which cumulative distance first reaches each target (NaN if never)."""
    n = cum_m.shape[0]
    j = cum_m.searchsorted(targets_m, side="left")
    ok = (j < n) & (j > 0)
    jj = np.clip(j, 1, max(n - 1, 1))
    c0, c1 = cum_m[jj - 1], cum_m[jj]
    span = np.where(c1 > c0, c1 - c0, 1.0)
    frac = np.clip((targets_m - c0) / span, 0.0, 1.0)
    out = t[jj - 1] + frac * (t[jj] - t[jj - 1])
    out = np.where(ok, out, np.nan)
    return np.asarray(np.where((j == 0) & (n > 0), t[0] if n else np.nan, out))


def splits_per_km(cum_m: FloatArray, t: FloatArray, split_m: float = 1000.0) -> FloatArray:
    """Duration in seconds of each completed split (default 1 km)."""
    if cum_m.shape[0] < 2:
        return np.zeros(0)
    count = int(cum_m[-1] // split_m)
    marks = np.arange(0, count + 1, dtype=np.float64) * split_m
    times = time_at_distance_s(cum_m, t, marks)
    times[0] = t[0]
    return np.diff(times)


@dataclass(frozen=True, slots=True)
class BestEffort:
    """Fastest window covering `distance_m`: from fix `start` for `duration_s`."""

    distance_m: float
    duration_s: float
    start: int
    end: int

    @property
    def speed_mps(self) -> float:
        return self.distance_m / self.duration_s if self.duration_s > 0 else float("inf")


def effort_windows(
    cum_m: FloatArray, t: FloatArray, distance_m: float, resolution: float = 0.0
) -> tuple[IntArray, IntArray, FloatArray]:
    """Windows starting at fixes and covering `distance_m`: (start, end fix, duration_s).

    With `resolution` > 0, starts are thinned to one per `resolution x distance_m` of track
    (the first fix of each slot), which bounds the work on very long tracks.
    """
    n = cum_m.shape[0]
    if n < 2 or cum_m[-1] < distance_m:
        z = np.zeros(0, dtype=np.int64)
        return z, z, np.zeros(0)
    last_start = int(cum_m.searchsorted(cum_m[-1] - distance_m, side="right"))
    if resolution > 0:
        slot = np.floor(cum_m[:last_start] / (resolution * distance_m))
        # last fix of each slot: a window starting there skips any standing still before it
        i = np.flatnonzero(np.concatenate((slot[1:] != slot[:-1], [True]))).astype(np.int64)
    else:
        i = np.arange(last_start, dtype=np.int64)
    target = cum_m[i] + distance_m
    j = cum_m.searchsorted(target, side="left").astype(np.int64, copy=False)
    j = np.minimum(np.maximum(j, 1), n - 1)
    c0, c1 = cum_m[j - 1], cum_m[j]
    frac = np.minimum(np.maximum((target - c0) / np.where(c1 > c0, c1 - c0, 1.0), 0.0), 1.0)
    t_end = t[j - 1] + frac * (t[j] - t[j - 1])
    return i, j, t_end - t[i]


def best_efforts(
    cum_m: FloatArray, t: FloatArray, distances_m: Iterable[float] | None = None
) -> dict[float, BestEffort]:
    """Fastest time over each standard distance covered (two-pointer via searchsorted)."""
    targets = STANDARD_DISTANCES_M.values() if distances_m is None else distances_m
    out: dict[float, BestEffort] = {}
    for d in targets:
        i, j, dur = effort_windows(cum_m, t, d)
        if dur.shape[0] == 0:
            continue
        best = int(np.argmin(dur))
        out[d] = BestEffort(d, float(dur[best]), int(i[best]), int(j[best]))
    return out


def cleaned_distance_m(
    track: Track, default_sigma_m: float = 10.0, settings: DistanceSettings | None = None
) -> float:
    """Cleaned distance of a sorted, valid track (missing accuracy counts as `default_sigma_m`)."""
    if len(track) < 2:
        return 0.0
    sigma = np.where(np.isfinite(track.acc_m) & (track.acc_m > 0), track.acc_m, default_sigma_m)
    creditable = np.diff(track.t) > 0
    steps = cleaned_steps(track.t, track.lat, track.lon, sigma, creditable, settings)
    return float(steps.cum_m[-1])
