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

_NONE = np.zeros(0, dtype=np.int64)


def _window_speed_raw(p: Prepared, window_s: float) -> FloatArray:
    """Chord speed of raw positions from each fix over the next `window_s` (NaN past a break)."""
    n = p.t.shape[0]
    j = p.ahead(window_s)
    valid = j <= p.seg_last
    j = np.minimum(j, n - 1)
    span = p.t[j] - p.t
    dist = xyz_distance_m(p.steps.xyz, None, j)
    valid &= span > 0
    span[~valid] = 1.0  # (only where the speed is NaN anyway)
    dist /= span
    dist[~valid] = np.nan
    return dist


def speed_noise_rule(p: Prepared, policy: PacePolicy) -> list[Flag]:
    """N1: 10 s speeds with a coefficient of variation below 0.02 for five minutes."""
    t, n = p.t, p.t.shape[0]
    speed = _window_speed_raw(p, policy.cv_speed_window_s)
    valid = np.isfinite(speed)
    invalid = ~valid
    any_valid = not bool(invalid.all())
    s = speed
    s[invalid] = 0.0  # (speed is this rule's own array)
    ref = float(s[valid].mean()) if any_valid else 0.0
    d = s
    d -= ref  # centring keeps the variance from prefix sums precise
    c1 = np.empty(n + 1)
    c1[0] = 0.0
    np.cumsum(d, out=c1[1:])
    c2 = np.empty(n + 1)
    c2[0] = 0.0
    d *= d
    np.cumsum(d, out=c2[1:])
    cn = np.empty(n + 1, dtype=np.int64)
    cn[0] = 0
    np.cumsum(valid, out=cn[1:])
    span = policy.cv_span_s - policy.cv_speed_window_s
    e = p.after(span)  # exclusive end: first fix more than `span` later
    e1 = np.maximum(e - 1, 0) if span < 0 else e - 1
    count = cn[e]
    count -= cn[:n]
    full = count == e - np.arange(n, dtype=np.int64)
    full &= count >= 10
    full &= e1 <= p.seg_last
    gap = t[e1]
    gap -= t
    full &= gap >= span - policy.normal_gap_s
    if not full.any():
        return []
    cnt = np.maximum(count, 1)
    mean_d = c1[e]
    mean_d -= c1[:n]
    mean_d /= cnt
    var = c2[e]
    var -= c2[:n]
    var /= cnt
    var -= mean_d * mean_d
    np.maximum(var, 0.0, out=var)
    mean = mean_d
    mean += ref
    hit = full
    hit &= mean >= policy.cv_min_speed_mps
    if not hit.any():
        return []
    cv = np.sqrt(var, out=var)
    cv /= np.where(mean > 0, mean, 1.0)
    hit &= cv < policy.cv_max
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
    cum = p.steps.cum_m
    if float(cum[-1]) < 0.9 * policy.wobble_block_m:
        return []  # no block can be long enough
    rad = np.pi / 180.0 * 6371008.8
    y = p.lat - p.lat[0]
    y *= rad
    x = p.lon - p.lon[0]
    x *= rad
    x *= np.cos(np.radians(p.lat[0]))
    cx, cy = x[2:] - x[:-2], y[2:] - y[:-2]
    ex, ey = x[1:-1] - x[:-2], y[1:-1] - y[:-2]
    chord = np.hypot(cx, cy)
    moving = p.steps.moving
    ok = chord > 0.5
    ok &= moving[:-1]
    ok &= moving[1:]
    wobble = cx * ey
    cy *= ex
    wobble -= cy
    np.abs(wobble, out=wobble)
    chord[~(chord > 0)] = 1.0  # (only where ok is False)
    wobble /= chord
    small_ok = wobble < policy.wobble_max_m
    small_ok &= ok
    # a hit needs a block with 2 x small > total >= 10, so at least 6 small ones
    if int(np.count_nonzero(small_ok)) < 6:
        return []
    block = np.floor(cum / policy.wobble_block_m).astype(np.int64, copy=False)
    nb = int(block[-1]) + 1
    inner = block[1:-1]
    total = np.bincount(inner[ok], minlength=nb)
    small = np.bincount(inner[small_ok], minlength=nb)
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
    j = p.ahead(hold_s)
    ok = j <= p.seg_last
    j = np.minimum(j, n - 1)
    span = t[j] - t
    cad_ok = np.isfinite(p.cadence_spm)
    c_sum = np.empty(n + 1)
    c_sum[0] = 0.0
    j1 = j + 1
    ok &= span > 0
    if cad_ok.all():  # every fix has a cadence: the count is the window's length
        np.cumsum(p.cadence_spm, out=c_sum[1:])
        cnt = j1 - np.arange(n, dtype=np.int64)
    else:
        np.cumsum(np.where(cad_ok, p.cadence_spm, 0.0), out=c_sum[1:])
        c_cnt = np.empty(n + 1, dtype=np.int64)
        c_cnt[0] = 0
        np.cumsum(cad_ok, out=c_cnt[1:])
        cnt = c_cnt[j1]
        cnt -= c_cnt[:n]
        ok &= cnt >= 0.8 * (j1 - np.arange(n, dtype=np.int64))
    cum = p.steps.cum_m
    speed = cum[j]
    speed -= cum[:n]
    speed /= np.where(span > 0, span, 1.0)
    cadence = c_sum[j1]
    cadence -= c_sum[:n]
    cadence /= np.maximum(cnt, 1)
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
    starts, stops = _runs(low) if low.any() else (_NONE, _NONE)
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
    # Samples are moving steps (the last fix has no step); the course falls back to the smoothed
    # step bearing, which is always finite, so it is computed only where the device gave none.
    m = n - 1
    reported = p.speed_mps[:m]
    speed = np.where(np.isfinite(reported), reported, p.steps.speed_mps)
    with np.errstate(invalid="ignore"):
        sample = speed >= policy.facing_min_speed_mps
        sample &= p.steps.moving
        sample &= ~(p.course_acc_deg[:m] > policy.facing_max_course_acc_deg)
        sample &= np.isfinite(p.heading_deg[:m])
    k = np.flatnonzero(sample)
    count = int(k.shape[0])
    if count < policy.facing_min_samples:
        return []
    course = p.course_deg[k]
    missing = ~np.isfinite(course)
    if missing.any():
        course[missing] = xyz_step_bearings_deg(p.steps.xyz_s, k[missing])
    away = angle_diff_deg(p.heading_deg[k], course) >= policy.facing_away_deg
    share_away = np.count_nonzero(away) / count  # = away.mean(): exact counts, one division
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
