"""Incremental driver for live races: O(1) work per fix, same final verdict as the batch driver.

`add` keeps a few running values (last fix, distance anchor, a short ring of recent fixes) to
raise live signals at once: mock location, a jump of a kilometre, superhuman speed, signal lost,
bad or future timestamps. The final `verdict` runs the one rule table over the fixes received,
so it is by construction the batch verdict on the same fixes (the rules need the whole track:
medians, best efforts up to a marathon, five-minute windows). Memory: the fixes as float64
rows, 80 bytes a fix (a 6 h race at 1 Hz: 1.7 MB per runner); 56 with `float32_extras`. A race
room keeps none (`keep_fixes=False`): its fixes are stored as they come, so at the finish it reads
them back and runs `check_fixes` on them, the same check `verdict` runs on the rows.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

import numpy as np

from game.pace.batch import check_track
from game.pace.policy import PacePolicy
from game.pace.verdict import Flag, Verdict, evidence
from game.track import EARTH_RADIUS_M, Fix, Track

_RAD = math.pi / 180.0
#: One row per fix: the fields the rules read (heart rate and elevation are not kept), the
#: time, position and mock flag as doubles, the device's extras in a second array.
_CORE = ("t", "lat", "lon", "mock")
_EXTRAS = ("acc_m", "speed_mps", "course_deg", "course_acc_deg", "heading_deg", "cadence_spm")
_WIDTH = len(_CORE)
_EXTRA_WIDTH = len(_EXTRAS)
_NAN = math.nan


_M_PER_DEG = EARTH_RADIUS_M * _RAD


def _flat_m(lat1: float, lon1: float, lat2: float, lon2: float, m_per_deg_lon: float) -> float:
    """Local flat-earth distance: cheap, and within 0.5% over a race's extent (live only)."""
    dlon = lon2 - lon1
    if dlon > 180.0:
        dlon -= 360.0
    elif dlon < -180.0:
        dlon += 360.0
    dx = dlon * m_per_deg_lon
    dy = (lat2 - lat1) * _M_PER_DEG
    return math.sqrt(dx * dx + dy * dy)


class LiveCheck:
    """Pace check fed one fix at a time during a live race."""

    __slots__ = (
        "_anchor",
        "_count",
        "_distance_m",
        "_extras",
        "_first_t",
        "_keep",
        "_kx",
        "_last",
        "_lost",
        "_now",
        "_paced",
        "_pending",
        "_policy",
        "_progress_t",
        "_raised",
        "_recent",
        "_rows",
        "_stalled",
    )

    def __init__(
        self,
        policy: PacePolicy | None = None,
        *,
        float32_extras: bool = False,
        keep_fixes: bool = True,
    ) -> None:
        """`float32_extras`: the extras (accuracy, speed, course, heading, cadence) of every fix
        are float32 values, as the server stores them (`server.tracks.stored_fix`), so they are
        kept as float32 with nothing lost: 56 bytes a fix instead of 80 (about 200 KB a runner
        an hour at 1 Hz). `keep_fixes=False`: no fix is kept (the live signals need none), and
        the verdict is `check_fixes` on the fixes the caller kept elsewhere."""
        self._policy = policy or PacePolicy()
        self._keep = keep_fixes
        self._count = 0
        self._rows = array("d")  # t, lat, lon, mock per fix
        self._extras = array("f" if float32_extras else "d")  # `_EXTRAS` per fix
        self._now = -math.inf
        self._kx = _M_PER_DEG  # metres per degree of longitude, set at the first fix
        self._first_t = math.nan
        self._last: tuple[float, float, float, float] | None = None  # t, lat, lon, sigma
        self._anchor: tuple[float, float, float] | None = None  # lat, lon, sigma
        self._distance_m = 0.0
        self._progress_t = math.nan
        self._raised: set[str] = set()
        self._recent: list[tuple[float, float, float]] = []  # a few fixes: a list, not a deque
        self._lost = False
        self._stalled = False
        self._pending: tuple[float, float, float, float, float] | None = None  # big jump
        self._paced = array("d")  # (t, distance) every `live_pace_sample_s`: `fast_pace`

    @property
    def distance_m(self) -> float:
        """Provisional distance credited so far (the verdict's distance is the cleaned one)."""
        return self._distance_m

    @property
    def elapsed_s(self) -> float:
        """Time from the first to the latest valid fix."""
        return self._last[0] - self._first_t if self._last is not None else 0.0

    @property
    def fixes_added(self) -> int:
        """How many fixes were added (valid or not)."""
        return self._count

    def _once(self, code: str, message: str, points: int, hard: bool, **ev: object) -> list[Flag]:
        if code in self._raised:
            return []
        self._raised.add(code)
        return [Flag(code, message, points, hard, evidence(**ev))]

    def add(self, fix: Fix, now: float) -> list[Flag]:
        """Take one fix; return the live flags it raises (each hard fail once)."""
        n = self._count
        self._count = n + 1
        a, v, c, ca, h, cad = (
            fix.acc_m,
            fix.speed_mps,
            fix.course_deg,
            fix.course_acc_deg,
            fix.heading_deg,
            fix.cadence_spm,
        )
        if self._keep:
            self._rows.extend((fix.t, fix.lat, fix.lon, 1.0 if fix.mock else 0.0))
            self._extras.extend((
                _NAN if a is None else a, _NAN if v is None else v, _NAN if c is None else c,
                _NAN if ca is None else ca, _NAN if h is None else h, _NAN if cad is None else cad,
            ))  # fmt: skip
        if now > self._now:
            self._now = now
        p = self._policy
        flags: list[Flag] = []
        if fix.mock:
            flags += self._once(
                "mock_location",
                "the device marked this fix as simulated (mock location)",
                p.mock_points,
                p.mock_hard_fail,
                index=n,
                t=fix.t,
            )
        t, lat, lon = fix.t, fix.lat, fix.lon
        last = self._last
        if not (t >= p.min_time_s and (last is None or t > last[0])) or math.isinf(t):
            return flags + self._once(
                "bad_timestamps",
                "duplicate, out-of-order or bad time",
                0,
                False,
                index=n,
            )
        if t > now + p.future_tolerance_s:
            return flags + self._once(
                "future_timestamps", "fix time ahead of server time", 0, False, t=t, ahead_s=t - now
            )
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            return flags + self._once(
                "invalid_coordinates", "position out of range", 0, False, index=n
            )
        acc = fix.acc_m
        if acc is not None and not 0.0 < acc <= p.max_acc_m:
            return flags  # H2: dropped, as in the batch check
        sigma = p.default_sigma_m if acc is None else acc
        if last is None:
            self._first_t = self._progress_t = t
            self._kx = _M_PER_DEG * math.cos(lat * _RAD)
            self._last = (t, lat, lon, sigma)
            self._anchor = (lat, lon, sigma)
            self._recent.append((t, lat, lon))
            return flags
        lt, llat, llon, lsig = last
        dt = t - lt
        self._last = (t, lat, lon, sigma)
        if self._lost:
            self._lost = False
        elif p.live_signals and dt > p.signal_lost_s:
            flags.append(
                Flag(
                    "signal_lost", f"no fix for {dt:.0f} s", 0, False, evidence(duration_s=dt, t=lt)
                )
            )
        kx = self._kx
        step = _flat_m(llat, llon, lat, lon, kx)
        pending = self._pending
        if pending is not None:
            # a big jump is a spike if this fix comes back near the fix before it
            self._pending = None
            pt, plat, plon, psig, jump_m = pending
            back = _flat_m(plat, plon, lat, lon, kx)
            if back > p.jump_speed_mps * (t - pt) + p.jump_sigma_factor * math.sqrt(
                psig * psig + sigma * sigma
            ):
                flags += self._once(
                    "jump",
                    f"position jumped {jump_m:.0f} m and stayed",
                    p.jump_large_points,
                    True,
                    distance_m=jump_m,
                    t=lt,
                )
        if dt > p.break_gap_s or step > p.jump_speed_mps * dt + p.jump_sigma_factor * math.sqrt(
            lsig * lsig + sigma * sigma
        ):
            if step >= p.jump_hard_fail_m and pending is None:
                self._pending = (lt, llat, llon, lsig, step)
            self._anchor = (lat, lon, sigma)  # segment break: no credit across
            self._recent.clear()
            self._recent.append((t, lat, lon))
            return flags
        anchor = self._anchor
        assert anchor is not None
        alat, alon, asig = anchor
        moved = _flat_m(alat, alon, lat, lon, kx)
        if moved >= p.distance.moving_acc_factor * math.sqrt(asig * asig + sigma * sigma):
            self._distance_m += moved
            self._anchor = (lat, lon, sigma)
            self._progress_t = t
            self._stalled = False
        if p.live_signals:
            paced = self._paced
            if not paced or t - paced[-2] >= p.live_pace_sample_s:
                flags += self._pace_sample(t)
        recent = self._recent
        recent.append((t, lat, lon))
        horizon = t - p.superhuman_window_s
        while len(recent) > 2 and recent[1][0] <= horizon:
            del recent[0]
        t0, lat0, lon0 = recent[0]
        if t0 <= horizon and "superhuman_speed" not in self._raised:
            speed = _flat_m(lat0, lon0, lat, lon, kx) / (t - t0)
            if speed > p.superhuman_mps:
                flags += self._once(
                    "superhuman_speed",
                    f"{speed:.1f} m/s: faster than any human",
                    0,
                    True,
                    speed_mps=speed,
                    duration_s=t - t0,
                    t=t,
                )
        return flags

    def _pace_sample(self, t: float) -> list[Flag]:
        """Sample the distance; over the last `live_pace_window_s`, faster than the review
        speed of the longest record the window covers is `fast_pace` (once): a bike or a car
        at a speed no hard fail catches."""
        p, paced, d = self._policy, self._paced, self._distance_m
        paced.extend((t, d))
        horizon = t - p.live_pace_window_s
        while len(paced) >= 6 and paced[2] <= horizon:  # keep one sample at or before it
            del paced[:2]
        t0, d0 = paced[0], paced[1]
        if t0 > horizon or "fast_pace" in self._raised:
            return []
        covered = d - d0
        record = next((r for r in reversed(p.records) if r.distance_m <= covered), None)
        speed = covered / (t - t0)
        if record is None or speed <= record.review_mps:
            return []
        return self._once(
            "fast_pace",
            f"{speed:.1f} m/s over the last {t - t0:.0f} s: faster than the backward "
            f"{record.name} record ({record.review_mps:g} m/s)",
            0,
            False,
            speed_mps=speed,
            duration_s=t - t0,
            distance_m=covered,
            record=record.name,
            t=t,
        )

    def tick(self, now: float) -> list[Flag]:
        """Timer signals without a new fix: signal lost (30 s), no progress (safety alert, 60 s)."""
        p = self._policy
        if self._last is None or not p.live_signals:
            return []
        flags: list[Flag] = []
        silent = now - self._last[0]
        if silent > p.signal_lost_s and not self._lost:
            self._lost = True
            flags.append(
                Flag(
                    "signal_lost",
                    f"no fix for {silent:.0f} s",
                    0,
                    False,
                    evidence(duration_s=silent, t=self._last[0]),
                )
            )
        stalled = now - self._progress_t
        if stalled > p.no_progress_s and not self._stalled:
            self._stalled = True
            flags.append(
                Flag(
                    "no_progress",
                    f"no progress for {stalled:.0f} s: alert the spotter",
                    0,
                    False,
                    evidence(duration_s=stalled, t=self._progress_t, km=self._distance_m / 1000.0),
                )
            )
        return flags

    def verdict(self, now: float | None = None) -> Verdict:
        """Final verdict: the batch check on every fix added (`now` defaults to the latest seen)."""
        if not self._keep:
            raise ValueError("this check keeps no fixes: run check_fixes on the stored ones")
        at = self._now if now is None else now
        # copies: a live buffer view would block further appends (BufferError on resize)
        rows = np.array(self._rows, dtype=np.float64).reshape(-1, _WIDTH)
        extras = np.array(self._extras, dtype=np.float64).reshape(-1, _EXTRA_WIDTH)
        cols = {name: rows[:, k].copy() for k, name in enumerate(_CORE)}
        cols |= {name: extras[:, k].copy() for k, name in enumerate(_EXTRAS)}
        return _check(cols, self._policy, at)


def check_fixes(fixes: Sequence[Fix], policy: PacePolicy, now: float) -> Verdict:
    """`LiveCheck.verdict` for a check that kept no fixes: the same check on the same fields."""
    cols: dict[str, np.ndarray] = {
        name: np.array([_nan_if_none(getattr(f, name)) for f in fixes], dtype=np.float64)
        for name in _CORE[:3] + _EXTRAS
    }
    cols["mock"] = np.array([1.0 if f.mock else 0.0 for f in fixes], dtype=np.float64)
    return _check(cols, policy, now)


def _nan_if_none(value: float | None) -> float:
    return _NAN if value is None else value


def _check(cols: dict[str, np.ndarray], policy: PacePolicy, now: float) -> Verdict:
    track = Track.from_arrays(
        cols.pop("t"), cols.pop("lat"), cols.pop("lon"), mock=cols.pop("mock") != 0.0, **cols
    )
    return check_track(track, policy, now=now if math.isfinite(now) else 0.0)
