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
    xyz_distance_m,
    xyz_steps_m,
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
    memo: dict[float, IntArray] = field(default_factory=dict)  # shared window ends

    def ahead(self, window_s: float) -> IntArray:
        """Per fix, the index of the first fix at least `window_s` later (n if none)."""
        j = self.memo.get(window_s)
        if j is None:
            j = self.t.searchsorted(self.t + window_s, side="left").astype(np.int64)
            self.memo[window_s] = j
        return j


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


def _hygiene(track: Track, policy: PacePolicy, now: float, flags: list[Flag]) -> BoolArray:
    """H1 timestamps and coordinates: returns the mask of fixes kept."""
    n = len(track)
    t, lat, lon = track.t, track.lat, track.lon
    finite_t = np.isfinite(t)
    future = finite_t & (t > now + policy.future_tolerance_s)
    ok_t = finite_t & ~future & (t >= policy.min_time_s)
    running = np.maximum.accumulate(np.where(ok_t, t, -np.inf))
    prev = np.concatenate(([-np.inf], running[:-1]))
    bad_t = ~ok_t | (t <= prev)
    bad_coord = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
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
    kept_acc = acc[keep]
    reported = kept_acc[np.isfinite(kept_acc)]
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
    zeros = int((reported == 0).sum())
    positive = reported[reported > 0]
    median_acc = float(np.median(positive)) if positive.shape[0] else float("inf")
    mode_acc = (
        median_acc
        if zeros == 0 and positive.shape[0] == reported.shape[0]
        else float(np.median(reported))
    )
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
    ok_acc = np.isfinite(acc) & (acc > 0) & (acc <= policy.max_acc_m)
    new_keep = keep & ok_acc
    t_k = track.t[keep]
    dropped = ~ok_acc[keep]
    span = float(t_k[-1] - t_k[0]) if t_k.shape[0] >= 2 else 0.0
    dropped_s = float(np.diff(t_k)[dropped[1:]].sum()) if t_k.shape[0] >= 2 else 0.0
    dropped_share = dropped_s / span if span > 0 else (1.0 if dropped.any() else 0.0)
    low = median_acc > policy.low_conf_median_acc_m or dropped_share > policy.low_conf_dropped_share
    n_dropped = int(dropped.sum())
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
    return new_keep, np.where(np.isfinite(acc) & (acc > 0), acc, policy.default_sigma_m), low


def _jumps(
    t: FloatArray, u: Xyz, sigma: FloatArray, policy: PacePolicy
) -> tuple[BoolArray, FloatArray]:
    """G4 jump test per step: (is jump, step length)."""
    d = xyz_steps_m(u)
    thr = policy.jump_speed_mps * np.diff(t) + policy.jump_sigma_factor * np.sqrt(
        sigma[:-1] ** 2 + sigma[1:] ** 2
    )
    return np.asarray(d > thr), d


def _spikes(t: FloatArray, u: Xyz, sigma: FloatArray, policy: PacePolicy) -> BoolArray:
    """G4 spikes: a fix that jumps out and whose next fix comes back."""
    n = t.shape[0]
    spike = np.zeros(n, dtype=np.bool_)
    if n < 3:
        return spike
    jump, d = _jumps(t, u, sigma, policy)
    dt = t[1:] - t[:-1]
    if not jump.any() and not (d > policy.spike_speed_mps * dt).any():
        return spike  # neither condition below can hold without such a step
    k = np.arange(n - 2, dtype=np.int64)
    skip = xyz_distance_m(u, k, k + 2)
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
    t: FloatArray,
    lat: FloatArray,
    lon: FloatArray,
    d: FloatArray,
    usable: BoolArray,
    policy: PacePolicy,
) -> BoolArray:
    """H4: runs of >= 3 one-second steps of identical length and bearing, > 5 m each."""
    m = d.shape[0]
    cand = (
        usable
        & (np.abs(np.diff(t) - policy.extrap_dt_s) <= policy.extrap_dt_tol_s)
        & (d > policy.extrap_min_step_m)
    )
    if m < policy.extrap_min_steps or not cand.any():
        return np.zeros(m, dtype=np.bool_)
    bearing = np.zeros(m)
    k = np.flatnonzero(cand)
    bearing[k] = bearings_deg(lat[k], lon[k], lat[k + 1], lon[k + 1])
    pair = (
        cand[1:]
        & cand[:-1]
        & (np.abs(d[1:] - d[:-1]) <= policy.extrap_len_tol_m)
        & (angle_diff_deg(bearing[1:], bearing[:-1]) <= policy.extrap_bearing_tol_deg)
    )
    starts, stops = _runs(pair)
    long = (stops - starts) >= policy.extrap_min_steps - 1
    # pair k links steps k and k+1: a run of pairs [s, e) covers steps [s, e + 1)
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

    t, lat, lon, sigma = track.t[index], track.lat[index], track.lon[index], sigma_all[index]
    u = unit_vectors(lat, lon)
    spike = _spikes(t, u, sigma, policy)
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

    jump, d = _jumps(t, u, sigma, policy)
    dt = np.diff(t)
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
    extrap = _extrapolated(t, lat, lon, d, ~jump & ~brk, policy)
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
        speed_mps=track.speed_mps[index],
        course_deg=track.course_deg[index],
        course_acc_deg=track.course_acc_deg[index],
        heading_deg=track.heading_deg[index],
        cadence_spm=track.cadence_spm[index],
    )
    return Cleaning(flags, prepared, low_conf, record_blocked)
