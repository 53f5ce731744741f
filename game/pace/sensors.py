"""Missing-noise and sensor rules (N1, N2, C1, C2, B1) over a cleaned track."""

from __future__ import annotations

import numpy as np

from game.pace.clean import Prepared, _runs
from game.pace.policy import PacePolicy
from game.pace.verdict import Flag, evidence
from game.track import (
    FloatArray,
    angle_diff_deg,
    xyz_distance_m,
    xyz_step_bearings_deg,
)


def _window_speed_raw(p: Prepared, window_s: float) -> FloatArray:
    """Chord speed of raw positions from each fix over the next `window_s` (NaN past a break)."""
    n = p.t.shape[0]
    i = np.arange(n, dtype=np.int64)
    j = p.ahead(window_s)
    valid = j <= p.seg_last
    j = np.minimum(j, n - 1)
    span = p.t[j] - p.t[i]
    dist = xyz_distance_m(p.steps.xyz, i, j)
    ok = valid & (span > 0)
    return np.asarray(np.where(ok, dist / np.where(span > 0, span, 1.0), np.nan))


def speed_noise_rule(p: Prepared, policy: PacePolicy) -> list[Flag]:
    """N1: 10 s speeds with a coefficient of variation below 0.02 for five minutes."""
    t, n = p.t, p.t.shape[0]
    speed = _window_speed_raw(p, policy.cv_speed_window_s)
    valid = np.isfinite(speed)
    s = np.where(valid, speed, 0.0)
    ref = float(s[valid].mean()) if valid.any() else 0.0
    d = s - ref  # centring keeps the variance from prefix sums precise
    c1 = np.concatenate(([0.0], d.cumsum()))
    c2 = np.concatenate(([0.0], np.cumsum(d * d)))
    cn = np.concatenate(([0], np.cumsum(valid.astype(np.int64, copy=False))))
    span = policy.cv_span_s - policy.cv_speed_window_s
    e = t.searchsorted(t + span, side="right").astype(np.int64, copy=False)  # exclusive end
    i = np.arange(n, dtype=np.int64)
    count = cn[e] - cn[i]
    full = (count == e - i) & (count >= 10) & (e - 1 <= p.seg_last)
    full &= t[np.maximum(e - 1, 0)] - t >= span - policy.normal_gap_s
    cnt = np.maximum(count, 1)
    mean_d = (c1[e] - c1[i]) / cnt
    var = np.maximum((c2[e] - c2[i]) / cnt - mean_d**2, 0.0)
    mean = mean_d + ref
    cv = np.sqrt(var) / np.where(mean > 0, mean, 1.0)
    hit = full & (mean >= policy.cv_min_speed_mps) & (cv < policy.cv_max)
    if not hit.any():
        return []
    k = int(np.argmax(hit))
    return [
        Flag(
            "no_speed_noise",
            "speed too steady for a person: no natural variation for 5 minutes",
            policy.cv_points,
            False,
            evidence(
                cv=float(cv[k]),
                speed_mps=float(mean[k]),
                duration_s=policy.cv_span_s,
                index=int(p.index[k]),
                t=float(t[k]),
            ),
        )
    ]


def wobble_rule(p: Prepared, policy: PacePolicy) -> list[Flag]:
    """N2: median sideways wobble below 0.05 m over 200 m of straight running."""
    n = p.t.shape[0]
    if n < 3:
        return []
    rad = np.pi / 180.0 * 6371008.8
    y = (p.lat - p.lat[0]) * rad
    x = (p.lon - p.lon[0]) * rad * np.cos(np.radians(p.lat[0]))
    cx, cy = x[2:] - x[:-2], y[2:] - y[:-2]
    ex, ey = x[1:-1] - x[:-2], y[1:-1] - y[:-2]
    chord = np.hypot(cx, cy)
    moving = p.steps.moving
    ok = (chord > 0.5) & moving[:-1] & moving[1:]
    wobble = np.abs(cx * ey - cy * ex) / np.where(chord > 0, chord, 1.0)
    cum = p.steps.cum_m
    block = np.floor(cum / policy.wobble_block_m).astype(np.int64, copy=False)
    nb = int(block[-1]) + 1
    total = np.bincount(block[1:-1][ok], minlength=nb)
    small = np.bincount(block[1:-1][ok & (wobble < policy.wobble_max_m)], minlength=nb)
    first = block.searchsorted(np.arange(nb), side="left")
    last = block.searchsorted(np.arange(nb), side="right") - 1
    path = cum[last] - cum[first]
    straight_m = xyz_distance_m(p.steps.xyz, first, last)
    hit = (
        (path >= 0.9 * policy.wobble_block_m)
        & (straight_m >= policy.wobble_straightness * path)
        & (total >= 10)
        & (2 * small > total)
    )
    if not hit.any():
        return []
    b = int(np.argmax(hit))
    k = int(first[b])
    return [
        Flag(
            "no_wobble",
            "no sideways GPS wobble on a straight: looks simulated",
            policy.wobble_points,
            False,
            evidence(
                km=float(cum[k]) / 1000.0,
                distance_m=policy.wobble_block_m,
                index=int(p.index[k]),
                t=float(p.t[k]),
            ),
        )
    ]


def _window_means(p: Prepared, hold_s: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per fix, over the next `hold_s`: (credited speed, mean cadence, covered mask as float)."""
    t, n = p.t, p.t.shape[0]
    i = np.arange(n, dtype=np.int64)
    j = p.ahead(hold_s)
    ok = j <= p.seg_last
    j = np.minimum(j, n - 1)
    span = t[j] - t[i]
    cad_ok = np.isfinite(p.cadence_spm)
    c_sum = np.concatenate(([0.0], np.cumsum(np.where(cad_ok, p.cadence_spm, 0.0))))
    c_cnt = np.concatenate(([0], np.cumsum(cad_ok.astype(np.int64))))
    cnt = c_cnt[j + 1] - c_cnt[i]
    ok &= (span > 0) & (cnt >= 0.8 * (j - i + 1))
    cum = p.steps.cum_m
    speed = (cum[j] - cum[i]) / np.where(span > 0, span, 1.0)
    cadence = (c_sum[j + 1] - c_sum[i]) / np.maximum(cnt, 1)
    return speed, cadence, ok.astype(np.float64)


def sensor_rule(p: Prepared, policy: PacePolicy) -> list[Flag]:
    """C1 cadence too low for the speed (30 s); C2 step length too long (60 s)."""
    if p.t.shape[0] < 2 or not np.isfinite(p.cadence_spm).any():
        return []
    flags: list[Flag] = []
    # C1 holds fix by fix (a stop inside a window must not fake a low cadence)
    step_speed = np.concatenate((p.steps.speed_mps, [np.nan]))
    with np.errstate(invalid="ignore"):
        low = (step_speed > policy.cadence_speed_mps) & (p.cadence_spm < policy.cadence_min_spm)
    starts, stops = _runs(low)
    dur = p.t[stops - 1] - p.t[starts]
    if dur.shape[0] and float(dur.max()) >= policy.cadence_hold_s:
        k = int(starts[int(np.argmax(dur))])
        flags.append(
            Flag(
                "cadence_mismatch",
                f"running at {step_speed[k]:.1f} m/s with cadence {p.cadence_spm[k]:.0f}/min",
                policy.cadence_points,
                False,
                evidence(
                    speed_mps=float(step_speed[k]),
                    cadence_spm=float(p.cadence_spm[k]),
                    duration_s=float(dur.max()),
                    index=int(p.index[k]),
                    t=float(p.t[k]),
                ),
            )
        )
    speed, cad, ok = _window_means(p, policy.stride_hold_s)
    stride = speed * 60.0 / np.where(cad > 0, cad, np.inf)
    long = (ok > 0) & (stride > policy.stride_max_m)
    if long.any():
        k = int(np.argmax(long))
        flags.append(
            Flag(
                "long_stride",
                f"step length {stride[k]:.2f} m: too long for backward running",
                policy.stride_points,
                False,
                evidence(
                    stride_m=float(stride[k]),
                    duration_s=policy.stride_hold_s,
                    index=int(p.index[k]),
                    t=float(p.t[k]),
                ),
            )
        )
    return flags


def facing_rule(p: Prepared, policy: PacePolicy) -> list[Flag]:
    """B1: device azimuth should face away (about 180 deg) from the course when moving."""
    n = p.t.shape[0]
    if n < 2 or not np.isfinite(p.heading_deg).any():
        return []
    step_course = np.concatenate((xyz_step_bearings_deg(p.steps.xyz_s), [np.nan]))
    course = np.where(np.isfinite(p.course_deg), p.course_deg, step_course)
    chord_speed = np.concatenate((p.steps.speed_mps, [np.nan]))
    speed = np.where(np.isfinite(p.speed_mps), p.speed_mps, chord_speed)
    moving = np.concatenate((p.steps.moving, [False]))
    with np.errstate(invalid="ignore"):
        course_ok = ~(p.course_acc_deg > policy.facing_max_course_acc_deg)
        sample = (
            moving
            & (speed >= policy.facing_min_speed_mps)
            & course_ok
            & np.isfinite(p.heading_deg)
            & np.isfinite(course)
        )
    count = int(sample.sum())
    if count < policy.facing_min_samples:
        return []
    away = angle_diff_deg(p.heading_deg[sample], course[sample]) >= policy.facing_away_deg
    share_away = float(away.mean())
    if share_away >= policy.facing_accept_share:
        return []
    ev = evidence(share_away=share_away, count=count)
    if share_away <= 1.0 - policy.facing_forward_share:
        return [
            Flag(
                "facing_forward",
                f"phone faced the direction of travel "
                f"{100 * (1 - share_away):.0f}% of the time: running forward?",
                policy.facing_forward_points,
                False,
                ev,
            )
        ]
    return [
        Flag(
            "partly_facing_forward",
            f"phone faced away only {100 * share_away:.0f}% of the time",
            policy.partly_facing_points,
            False,
            ev,
        )
    ]
