"""Kinematic rules (S1, V1, V2, A1) over a cleaned track, and the one rule table.

Each rule is a pure, vectorised function `(Prepared, PacePolicy) -> list[Flag]`; `RULES` is the
one rule table that both drivers (batch and live) run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from game.pace.clean import Prepared, _mark, _runs
from game.pace.policy import PacePolicy
from game.pace.sensors import facing_rule, sensor_rule, speed_noise_rule, wobble_rule
from game.pace.verdict import Flag, evidence
from game.track import (
    FloatArray,
    IntArray,
    effort_windows,
    xyz_distance_m,
    xyz_steps_m,
)

Rule = Callable[[Prepared, PacePolicy], list[Flag]]


def _ahead(p: Prepared, window_s: float) -> tuple[IntArray, IntArray, FloatArray]:
    """For each fix, the first fix `window_s` later in its segment: (start, end, valid mask)."""
    n = p.t.shape[0]
    i = np.arange(n, dtype=np.int64)
    j = p.ahead(window_s)
    valid = j <= p.seg_last
    return i, np.minimum(j, n - 1), np.asarray(valid, dtype=np.float64)


def _window_speed(p: Prepared, window_s: float, smoothed: bool) -> tuple[IntArray, FloatArray]:
    """Chord speed from each fix over the next `window_s` (NaN where the segment ends first)."""
    i, j, valid = _ahead(p, window_s)
    dist = xyz_distance_m(p.steps.xyz_s if smoothed else p.steps.xyz, i, j)
    span = p.t[j] - p.t[i]
    ok = (valid > 0) & (span > 0)
    speed = np.where(ok, dist / np.where(span > 0, span, 1.0), np.nan)
    return j, np.asarray(speed)


def best_effort_rule(p: Prepared, policy: PacePolicy) -> list[Flag]:
    """S1: best efforts over the record distances against review / reject / forward WR."""
    cum, t = p.steps.cum_m, p.t
    worst: dict[str, tuple[float, str, float, float, int]] = {}
    moving = p.steps.moving
    # No window can be faster than the fastest credited step: skip records it cannot beat.
    top_mps = float(p.steps.speed_mps[moving].max()) if moving.any() else 0.0
    for rec in policy.records:
        if top_mps <= rec.review_mps:
            continue
        i, j, dur = effort_windows(cum, t, rec.distance_m, policy.effort_resolution)
        if dur.shape[0] == 0:
            continue
        safe = np.where(dur > 0, dur, np.inf)
        speed = rec.distance_m / safe
        allowance = (
            policy.noise_allowance_factor * np.sqrt(p.sigma_m[i] ** 2 + p.sigma_m[j] ** 2) / safe
        )
        margin = speed - allowance
        k = int(np.argmax(margin))
        for level, ceiling in (
            ("faster_than_world_record", rec.forward_wr_mps),
            ("best_effort_reject", rec.reject_mps),
            ("best_effort_review", rec.review_mps),
        ):
            over = float(margin[k]) - ceiling
            if over > 0:
                if level not in worst or over > worst[level][0]:
                    worst[level] = (over, rec.name, float(speed[k]), float(dur[k]), int(i[k]))
                break
    for level in ("faster_than_world_record", "best_effort_reject", "best_effort_review"):
        if level in worst:
            _, name, speed_mps, dur_s, start = worst[level]
            points = {
                "faster_than_world_record": policy.best_effort_reject_points,
                "best_effort_reject": policy.best_effort_reject_points,
                "best_effort_review": policy.best_effort_review_points,
            }[level]
            what = {
                "faster_than_world_record": "faster than the forward world record",
                "best_effort_reject": "well above the backward record envelope",
                "best_effort_review": "faster than the backward record",
            }[level]
            return [
                Flag(
                    level,
                    f"best {name} at {speed_mps:.2f} m/s: {what}",
                    points,
                    level == "faster_than_world_record",
                    evidence(
                        distance=name,
                        speed_mps=speed_mps,
                        duration_s=dur_s,
                        index=int(p.index[start]),
                        t=float(t[start]),
                    ),
                )
            ]
    return []


def _sustained(p: Prepared, window_s: float, limit_mps: float) -> tuple[float, float, int]:
    """Windows of `window_s` above `limit_mps`: (total time covered, top speed, first fix)."""
    j, speed = _window_speed(p, window_s, smoothed=True)
    fast = speed > limit_mps  # NaN compares False
    if not fast.any():
        return 0.0, 0.0, -1
    n = p.t.shape[0]
    idx = np.flatnonzero(fast).astype(np.int64, copy=False)
    covered = _mark(n - 1, idx, j[idx])
    total = float(np.diff(p.t)[covered].sum())
    return total, float(np.nanmax(speed)), int(idx[0])


def vehicle_rule(p: Prepared, policy: PacePolicy) -> list[Flag]:
    """V1 (10 s above 9 m/s) and V2 (5 s smoothed speed above 12.5 m/s)."""
    flags: list[Flag] = []
    # A chord is never longer than the path: no window beats the fastest smoothed step.
    if p.t.shape[0] < 2 or float((xyz_steps_m(p.steps.xyz_s) / p.dt).max()) <= min(
        policy.vehicle_mps, policy.superhuman_mps
    ):
        return flags
    total, top, first = _sustained(p, policy.vehicle_window_s, policy.vehicle_mps)
    if first >= 0:
        flags.append(
            Flag(
                "vehicle_speed",
                f"{total:.0f} s above {policy.vehicle_mps:g} m/s: vehicle speed",
                policy.vehicle_points,
                total >= policy.vehicle_hard_fail_s,
                evidence(
                    speed_mps=top, duration_s=total, index=int(p.index[first]), t=float(p.t[first])
                ),
            )
        )
    total, top, first = _sustained(p, policy.superhuman_window_s, policy.superhuman_mps)
    if first >= 0:
        flags.append(
            Flag(
                "superhuman_speed",
                f"{top:.1f} m/s over {policy.superhuman_window_s:g} s: faster than any human",
                0,
                True,
                evidence(
                    speed_mps=top, duration_s=total, index=int(p.index[first]), t=float(p.t[first])
                ),
            )
        )
    return flags


def acceleration_rule(p: Prepared, policy: PacePolicy) -> list[Flag]:
    """A1: mean acceleration above the limit over `accel_hold_s` (plus a noise allowance)."""
    t, n, hold = p.t, p.t.shape[0], policy.accel_hold_s
    if n < 2:
        return []
    # The windows are >= `hold` on each side, so a flag needs a chord speed above accel x hold,
    # and no chord is faster than the fastest raw step.
    if float((p.step_m / p.dt).max()) <= policy.accel_mps2 * hold:
        return []
    i = np.arange(n, dtype=np.int64)
    j = p.ahead(hold)
    h = t.searchsorted(t - hold, side="right").astype(np.int64, copy=False) - 1
    ok = (j <= p.seg_last) & (h >= p.seg_first) & (h >= 0)
    j, h = np.minimum(j, n - 1), np.maximum(h, 0)
    u = p.steps.xyz  # raw positions: smoothing would spread a burst below the limit
    with np.errstate(divide="ignore", invalid="ignore"):
        v_after = xyz_distance_m(u, i, j) / (t[j] - t[i])
        v_before = xyz_distance_m(u, h, i) / (t[i] - t[h])
        acc = (v_after - v_before) / (0.5 * (t[j] - t[h]))
    limit = policy.accel_mps2 + policy.accel_noise_per_sigma * 0.5 * (p.sigma_m[h] + p.sigma_m[j])
    high = ok & (acc > limit)
    starts, _ = _runs(high)
    if starts.shape[0] == 0:
        return []
    count = int(starts.shape[0])
    first = int(starts[0])
    return [
        Flag(
            "acceleration",
            f"{count} bursts of acceleration above {policy.accel_mps2:g} m/s^2",
            min(policy.accel_points * count, policy.accel_points_cap),
            False,
            evidence(
                count=count,
                accel_mps2=float(np.nanmax(np.where(high, acc, np.nan))),
                duration_s=hold,
                index=int(p.index[first]),
                t=float(t[first]),
            ),
        )
    ]


#: The one rule table both drivers run, in PACE_RULES.md order (H*, G*, N3 run in `clean`).
RULES: tuple[Rule, ...] = (
    best_effort_rule,
    vehicle_rule,
    acceleration_rule,
    speed_noise_rule,
    wobble_rule,
    sensor_rule,
    facing_rule,
)
