"""Hygiene and gap rules (H1-H4, G1-G4, N3): raw track -> cleaned arrays plus flags.

Everything here is vectorised; the output `Prepared` feeds the kinematic rules in `rules.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from game.pace.policy import PacePolicy
from game.pace.verdict import Flag, evidence
from game.track import (
    BoolArray,
    CleanedSteps,
    FloatArray,
    IntArray,
    Track,
    Xyz,
    angle_diff_deg,
    bearings_deg,
    cleaned_steps,
    unit_vectors,
    xyz_lag_m,
)


@dataclass(frozen=True, slots=True, eq=False)
class Prepared:
    """A cleaned track: kept fixes (sorted, valid, de-spiked) and their step geometry."""

    index: IntArray  # original fix index of each kept fix
    t: FloatArray
    lat: FloatArray
    lon: FloatArray
    sigma_m: FloatArray
    steps: CleanedSteps
    creditable: BoolArray  # per step
    seg_first: IntArray  # per fix, segments cut where a step is not creditable
    seg_last: IntArray
    speed_mps: FloatArray  # device-reported, per kept fix
    course_deg: FloatArray
    course_acc_deg: FloatArray
    heading_deg: FloatArray
    cadence_spm: FloatArray
    dt: FloatArray  # per step: duration
    step_m: FloatArray  # per step: great-circle length between raw positions
    memo: dict[float, IntArray] = field(default_factory=dict)  # shared window ends

    def ahead(self, window_s: float) -> IntArray:
        """Per fix, the index of the first fix at least `window_s` later (n if none).

        Shared: callers must not write to the result.
        """
        j = self.memo.get(window_s)
        if j is None:
            j = self.steps.times.search(self.t + window_s, "left")
            self.memo[window_s] = j
        return j

    def after(self, window_s: float) -> IntArray:
        """Per fix, the index of the first fix more than `window_s` later (n if none)."""
        return self.steps.times.search(self.t + window_s, "right")


@dataclass(frozen=True, slots=True)
class Cleaning:
    """Result of hygiene: flags so far, and the prepared track (None when too little is left)."""

    flags: list[Flag]
    prepared: Prepared | None
    low_confidence: bool
    record_blocked: bool


def _pct_points(count: int, n: int, policy: PacePolicy) -> int:
    return policy.bad_points_per_pct * int(100 * count // n) if n else 0


def _runs(mask: BoolArray) -> tuple[IntArray, IntArray]:
    """Start (inclusive) and stop (exclusive) indices of each run of True."""
    m = np.concatenate(([0], mask.astype(np.int8), [0]))
    d = np.diff(m)
    starts = np.flatnonzero(d == 1).astype(np.int64, copy=False)
    return starts, np.flatnonzero(d == -1).astype(np.int64, copy=False)


def _mark(n: int, starts: IntArray, stops: IntArray) -> BoolArray:
    """Boolean mask of length n, True on every [start, stop) interval."""
    delta = np.bincount(starts, minlength=n + 1) - np.bincount(stops, minlength=n + 1)
    return np.asarray(np.cumsum(delta[:n]) > 0)


def _median(x: FloatArray) -> float:
    """`np.median` of a non-empty NaN-free array, bit for bit, without its overhead."""
    m = x.shape[0]
    h = m // 2
    if m % 2:
        return float(np.partition(x, h)[h])
    part = np.partition(x, (h - 1, h))
    return float((part[h - 1] + part[h]) / 2.0)  # np.median: the mean of the middle two


def _hygiene(track: Track, policy: PacePolicy, now: float, flags: list[Flag]) -> BoolArray:
    """H1 timestamps and coordinates: returns the mask of fixes kept."""
    n = len(track)
    t, lat, lon = track.t, track.lat, track.lon
    # NaN and +-inf fail every comparison below, so no separate finiteness tests are needed
    future = t > now + policy.future_tolerance_s  # (+inf counts as future, as before)
    future &= t < np.inf
    ok_t = t >= policy.min_time_s
    ok_t &= ~future
    ok_t &= t < np.inf
    ok_coord = np.abs(lat) <= 90
    ok_coord &= np.abs(lon) <= 180
    if n >= 2 and bool(ok_t.all()) and bool((t[1:] > t[:-1]).all()) and bool(ok_coord.all()):
        return ok_coord  # the common case: valid, strictly increasing, nothing to flag
    running = np.maximum.accumulate(np.where(ok_t, t, -np.inf))
    prev = np.concatenate(([-np.inf], running[:-1]))
    bad_t = ~ok_t | (t <= prev)
    bad_coord = ~ok_coord
    bad = bad_t | bad_coord
    n_bad = int(bad.sum())
    hard = n_bad > policy.bad_hard_fail_share * n
    share = n_bad / n
    groups = (
        ("bad_timestamps", bad_t & ~future, "duplicate, out-of-order, missing or pre-2000 times"),
        ("future_timestamps", future, "timestamps ahead of server time"),
        ("invalid_coordinates", bad_coord & ~bad_t, "latitude/longitude missing or out of range"),
    )
    raised: list[Flag] = []
    for code, mask, what in groups:
        count = int(mask.sum())
        if count:
            first = int(np.argmax(mask))
            raised.append(
                Flag(
                    code,
                    f"{count} of {n} fixes dropped: {what}",
                    _pct_points(count, n, policy),
                    hard,
                    evidence(count=count, share=share, index=first, t=float(t[first])),
                )
            )
    if raised:
        # +10 per 1% of bad fixes of any kind: the remainder goes to the commonest kind
        extra = _pct_points(n_bad, n, policy) - sum(f.points for f in raised)
        top = max(range(len(raised)), key=lambda k: int(raised[k].evidence["count"]))
        raised[top] = replace(raised[top], points=raised[top].points + extra)
    flags.extend(raised)
    return np.asarray(~bad)


def _accuracy(
    track: Track, keep: BoolArray, policy: PacePolicy, flags: list[Flag]
) -> tuple[BoolArray, FloatArray, bool]:
    """H2 accuracy filter and N3 constant accuracy: (kept mask, sigma per fix, low confidence)."""
    acc = track.acc_m
    finite_acc = np.isfinite(acc)
    reported = acc[finite_acc & keep]
    if reported.shape[0] == 0:
        flags.append(
            Flag(
                "low_accuracy",
                "no accuracy reported: low confidence",
                0,
                False,
                evidence(assumed_sigma_m=policy.default_sigma_m),
            )
        )
        return keep, np.full(acc.shape[0], policy.default_sigma_m), True
    # N3: simulators report one accuracy value, or exactly 0. A value held by over half of the
    # fixes is the median, so the median's share is the mode's share whenever it matters.
    zeros = int(np.count_nonzero(reported == 0))
    pos_mask = reported > 0
    all_positive = bool(pos_mask.all())
    positive = reported if all_positive else reported[pos_mask]
    median_acc = _median(positive) if positive.shape[0] else float("inf")
    mode_acc = median_acc if zeros == 0 and all_positive else _median(reported)
    mode_share = float((reported == mode_acc).sum()) / reported.shape[0]
    if zeros or (
        reported.shape[0] >= policy.const_acc_min_fixes and mode_share > policy.const_acc_share
    ):
        flags.append(
            Flag(
                "constant_accuracy",
                "reported accuracy is constant or exactly 0, as simulators report it",
                policy.const_acc_points,
                False,
                evidence(acc_m=0.0 if zeros else mode_acc, share=mode_share, zero_count=zeros),
            )
        )
    positive_acc = acc > 0  # False for NaN
    ok_acc = positive_acc & (acc <= policy.max_acc_m)  # +inf fails the upper bound
    new_keep = keep & ok_acc
    if bool((keep <= ok_acc).all()):  # nothing kept is dropped for accuracy
        dropped_share, n_dropped = 0.0, 0
    else:
        t_k = track.t[keep]
        dropped = ~ok_acc[keep]
        span = float(t_k[-1] - t_k[0]) if t_k.shape[0] >= 2 else 0.0
        dropped_s = float(np.diff(t_k)[dropped[1:]].sum()) if t_k.shape[0] >= 2 else 0.0
        dropped_share = dropped_s / span if span > 0 else (1.0 if dropped.any() else 0.0)
        n_dropped = int(dropped.sum())
    low = median_acc > policy.low_conf_median_acc_m or dropped_share > policy.low_conf_dropped_share
    if low or n_dropped:
        flags.append(
            Flag(
                "low_accuracy",
                f"{n_dropped} fixes dropped for accuracy; "
                + ("low confidence: never a record" if low else "enough accuracy left"),
                0,
                False,
                evidence(count=n_dropped, median_acc_m=median_acc, dropped_share=dropped_share),
            )
        )
    usable = positive_acc & (acc < np.inf)
    sigma = acc if bool(usable.all()) else np.where(usable, acc, policy.default_sigma_m)
    return new_keep, sigma, low


def _jumps(
    t: FloatArray, u: Xyz, sigma: FloatArray, policy: PacePolicy
) -> tuple[BoolArray, FloatArray, FloatArray]:
    """G4 jump test per step: (is jump, step length, step duration)."""
    d = xyz_lag_m(u, 1)
    dt = t[1:] - t[:-1]
    s2 = sigma * sigma
    noise = s2[:-1] + s2[1:]
    np.sqrt(noise, out=noise)
    noise *= policy.jump_sigma_factor
    thr = policy.jump_speed_mps * dt
    thr += noise
    return np.asarray(d > thr), d, dt


def _spikes(
    t: FloatArray,
    u: Xyz,
    sigma: FloatArray,
    policy: PacePolicy,
    steps: tuple[BoolArray, FloatArray, FloatArray],
) -> BoolArray:
    """G4 spikes: a fix that jumps out and whose next fix comes back (`steps` from `_jumps`)."""
    n = t.shape[0]
    spike = np.zeros(n, dtype=np.bool_)
    if n < 3:
        return spike
    jump, d, dt = steps
    if not jump.any() and not (d > policy.spike_speed_mps * dt).any():
        return spike  # neither condition below can hold without such a step
    skip = xyz_lag_m(u, 2)
    skip_thr = policy.jump_speed_mps * (t[2:] - t[:-2]) + policy.jump_sigma_factor * np.sqrt(
        sigma[:-2] ** 2 + sigma[2:] ** 2
    )
    d1, d2 = d[:-1], d[1:]
    out = np.minimum(d1, d2)
    # An out-and-back excursion faster than a person could run it, beyond the noise.
    out_and_back = (
        (skip < policy.spike_return_share * out)
        & (out > policy.spike_speed_mps * np.maximum(t[1:-1] - t[:-2], t[2:] - t[1:-1]))
        & (out > policy.jump_sigma_factor * np.sqrt(sigma[:-2] ** 2 + sigma[1:-1] ** 2))
    )
    spike[1:-1] = (skip <= skip_thr) & ((jump[:-1] & jump[1:]) | out_and_back)
    return spike


def _extrapolated(
    dt: FloatArray,
    lat: FloatArray,
    lon: FloatArray,
    d: FloatArray,
    usable: BoolArray,
    policy: PacePolicy,
) -> BoolArray:
    """H4: runs of >= 3 one-second steps of identical length and bearing, > 5 m each."""
    m = d.shape[0]
    none = np.zeros(m, dtype=np.bool_)
    if m < policy.extrap_min_steps:
        return none
    cand = d > policy.extrap_min_step_m
    if not cand.any():
        return none
    cand &= usable
    cand &= np.abs(dt - policy.extrap_dt_s) <= policy.extrap_dt_tol_s
    # pair k links steps k and k+1: both candidates, of equal length and bearing
    pair = cand[1:] & cand[:-1]
    pair &= np.abs(d[1:] - d[:-1]) <= policy.extrap_len_tol_m
    k = np.flatnonzero(pair)
    if k.shape[0] == 0:
        return none
    k1, k2 = k + 1, k + 2
    b0 = bearings_deg(lat[k], lon[k], lat[k1], lon[k1])
    b1 = bearings_deg(lat[k1], lon[k1], lat[k2], lon[k2])
    pair[k] = angle_diff_deg(b1, b0) <= policy.extrap_bearing_tol_deg
    starts, stops = _runs(pair)
    long = (stops - starts) >= policy.extrap_min_steps - 1
    if not long.any():
        return none
    # a run of pairs [s, e) covers steps [s, e + 1)
    return _mark(m, starts[long], stops[long] + 1)


def clean(track: Track, policy: PacePolicy, now: float) -> Cleaning:
    """Run the hygiene and gap rules and build the cleaned track."""
    flags: list[Flag] = []
    keep = _hygiene(track, policy, now, flags)
    # H3: any simulated fix (checked on every fix, valid or not).
    if track.mock.any():
        count = int(track.mock.sum())
        first = int(np.argmax(track.mock))
        flags.append(
            Flag(
                "mock_location",
                "the device marked fixes as simulated (mock location)",
                policy.mock_points,
                policy.mock_hard_fail,
                evidence(count=count, index=first, t=float(track.t[first])),
            )
        )
    low_conf = False
    if int(keep.sum()) >= policy.min_fixes:
        keep, sigma_all, low_conf = _accuracy(track, keep, policy, flags)
    else:
        sigma_all = np.full(len(track), policy.default_sigma_m)
    index = np.flatnonzero(keep).astype(np.int64, copy=False)
    if index.shape[0] < policy.min_fixes:
        return Cleaning(flags, None, low_conf, True)

    kept_all = index.shape[0] == len(track)  # no gathers needed (the arrays are never written)
    if kept_all:
        t, lat, lon, sigma = track.t, track.lat, track.lon, sigma_all
    else:
        t, lat, lon, sigma = track.t[index], track.lat[index], track.lon[index], sigma_all[index]
    u = unit_vectors(lat, lon)
    jumps = _jumps(t, u, sigma, policy)
    spike = _spikes(t, u, sigma, policy, jumps)
    if spike.any():
        count = int(spike.sum())
        first = int(np.argmax(spike))
        flags.append(
            Flag(
                "spike",
                f"{count} GPS spikes dropped (jumped out and came back)",
                min(policy.spike_points * count, policy.spike_points_cap),
                False,
                evidence(count=count, index=int(index[first]), t=float(t[first])),
            )
        )
        ok = ~spike
        index, t, lat, lon, sigma = index[ok], t[ok], lat[ok], lon[ok], sigma[ok]
        u = (u[0][ok], u[1][ok], u[2][ok])
        kept_all = False
        jumps = _jumps(t, u, sigma, policy)

    jump, d, dt = jumps
    elapsed = float(t[-1] - t[0])
    if jump.any():
        sizes = d[jump]
        worst = int(np.argmax(np.where(jump, d, -1.0)))
        large = sizes >= policy.jump_large_m
        points = int(large.sum()) * policy.jump_large_points + int((~large).sum()) * (
            policy.jump_small_points
        )
        flags.append(
            Flag(
                "jump",
                f"{int(jump.sum())} position jumps that stay; no distance credited across",
                points,
                bool((sizes >= policy.jump_hard_fail_m).any()),
                evidence(
                    count=int(jump.sum()),
                    distance_m=float(d[worst]),
                    duration_s=float(dt[worst]),
                    index=int(index[worst + 1]),
                    t=float(t[worst + 1]),
                ),
            )
        )
    brk = dt > policy.break_gap_s
    sparse = (dt > policy.normal_gap_s) & ~brk
    sparse_share = float(dt[sparse].sum()) / elapsed if elapsed > 0 else 0.0
    record_blocked = sparse_share > policy.sparse_record_share
    if sparse.any():
        first = int(np.argmax(sparse))
        flags.append(
            Flag(
                "sparse_sampling",
                f"{int(sparse.sum())} gaps of {policy.normal_gap_s:g}-{policy.break_gap_s:g} s: "
                "chord credited" + ("; not record-eligible" if record_blocked else ""),
                0,
                False,
                evidence(
                    count=int(sparse.sum()),
                    share=sparse_share,
                    index=int(index[first + 1]),
                    t=float(t[first + 1]),
                    duration_s=float(dt[sparse].sum()),
                ),
            )
        )
    if brk.any():
        longest = int(np.argmax(np.where(brk, dt, -1.0)))
        flags.append(
            Flag(
                "signal_break",
                f"{int(brk.sum())} gaps over {policy.break_gap_s:g} s: no distance credited across",
                0,
                False,
                evidence(
                    count=int(brk.sum()),
                    duration_s=float(dt[longest]),
                    index=int(index[longest + 1]),
                    t=float(t[longest + 1]),
                ),
            )
        )
    extrap = _extrapolated(dt, lat, lon, d, ~jump & ~brk, policy)
    if extrap.any():
        first = int(np.argmax(extrap))
        flags.append(
            Flag(
                "extrapolated",
                f"{int(extrap.sum())} steps look extrapolated through a dropout: not credited",
                0,
                False,
                evidence(
                    count=int(extrap.sum()),
                    index=int(index[first]),
                    t=float(t[first]),
                    duration_s=float(dt[extrap].sum()),
                ),
            )
        )
    creditable = ~jump & ~brk & ~extrap
    steps = cleaned_steps(t, lat, lon, sigma, creditable, policy.distance, xyz=u)
    seg_first, seg_last = steps.seg_first, steps.seg_last
    prepared = Prepared(
        index=index,
        t=t,
        lat=lat,
        lon=lon,
        sigma_m=sigma,
        steps=steps,
        creditable=creditable,
        seg_first=seg_first,
        seg_last=seg_last,
        speed_mps=track.speed_mps if kept_all else track.speed_mps[index],
        course_deg=track.course_deg if kept_all else track.course_deg[index],
        course_acc_deg=track.course_acc_deg if kept_all else track.course_acc_deg[index],
        heading_deg=track.heading_deg if kept_all else track.heading_deg[index],
        cadence_spm=track.cadence_spm if kept_all else track.cadence_spm[index],
        dt=dt,
        step_m=d,
    )
    return Cleaning(flags, prepared, low_conf, record_blocked)
