"""Replay detection: is a new upload a time-shifted copy of a track we have already seen?

A fingerprint is the path resampled every `step_m` metres along its own length: one row of
(lat, lon, t) per point, a few kilobytes for a 10 km run. A replay lies within a metre or two of
its source all along (two honest runs of the same route differ by the GPS error of both, several
metres), *and* reaches every point after the same elapsed time as the source, shifted by one
constant. Runners recording together are not replays: the shift must be at least `min_shift_s`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from game.track import FloatArray, Track

EARTH_RADIUS_M = 6_371_008.8
REPLAY_CODE = "replayed_track"


@dataclass(frozen=True, slots=True)
class ReplayMatch:
    """The candidate a track copies, with the evidence for a moderator."""

    candidate_id: str
    median_offset_m: float  # median distance from the track to the candidate's path
    matched_share: float  # share of fingerprint points within `max_offset_m` of it
    time_shift_s: float  # how far the copy was moved in time
    time_spread_s: float  # median deviation from that constant shift
    code: str = REPLAY_CODE


def fingerprint(track: Track, step_m: float = 25.0) -> FloatArray:
    """Resample the path every `step_m` metres: an (n, 3) array of lat, lon and Unix seconds."""
    ok = np.isfinite(track.t) & np.isfinite(track.lat) & np.isfinite(track.lon)
    t, lat, lon = track.t[ok], track.lat[ok], track.lon[ok]
    if t.shape[0] < 2:
        return np.empty((0, 3))
    order = np.argsort(t, kind="stable")
    t, lat, lon = t[order], lat[order], lon[order]
    x, y = _project(lat, lon, float(lat[0]), float(lon[0]))
    s = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    at = np.arange(0.0, s[-1] + 1e-9, step_m)
    s_u, first = np.unique(s, return_index=True)  # standing still repeats a distance
    return np.column_stack(
        [
            np.interp(at, s_u, lat[first]),
            np.interp(at, s_u, lon[first]),
            np.interp(at, s_u, t[first]),
        ]
    )


def _project(
    lat: FloatArray, lon: FloatArray, lat0: float, lon0: float
) -> tuple[FloatArray, FloatArray]:
    """East/north metres around (lat0, lon0): exact enough over a run's few kilometres."""
    k = np.pi / 180.0 * EARTH_RADIUS_M
    return (lon - lon0) * k * np.cos(np.radians(lat0)), (lat - lat0) * k


def _nearest_on_path(
    px: FloatArray, py: FloatArray, qx: FloatArray, qy: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """For each point p: distance to the polyline q, and the segment index and fraction hit."""
    ax, ay = qx[:-1][None, :], qy[:-1][None, :]
    dx, dy = (qx[1:] - qx[:-1])[None, :], (qy[1:] - qy[:-1])[None, :]
    seg2 = np.maximum(dx * dx + dy * dy, 1e-12)
    u = np.clip(((px[:, None] - ax) * dx + (py[:, None] - ay) * dy) / seg2, 0.0, 1.0)
    d = np.hypot(px[:, None] - (ax + u * dx), py[:, None] - (ay + u * dy))
    j = np.argmin(d, axis=1)
    rows = np.arange(px.shape[0])
    return d[rows, j], j.astype(np.float64), u[rows, j]


def compare(query: FloatArray, candidate: FloatArray, max_offset_m: float = 5.0) -> ReplayMatch:
    """Measure how closely fingerprint `query` follows fingerprint `candidate` in space and time."""
    lat0, lon0 = float(query[0, 0]), float(query[0, 1])
    px, py = _project(query[:, 0], query[:, 1], lat0, lon0)
    qx, qy = _project(candidate[:, 0], candidate[:, 1], lat0, lon0)
    dist_m, j, u = _nearest_on_path(px, py, qx, qy)
    seg = j.astype(np.int64)
    t_cand = candidate[seg, 2] + u * (candidate[seg + 1, 2] - candidate[seg, 2])
    near = dist_m <= max_offset_m
    shift = query[:, 2] - t_cand
    shift_s = float(np.median(shift[near])) if near.any() else float("nan")
    spread = float(np.median(np.abs(shift[near] - shift_s))) if near.any() else float("inf")
    return ReplayMatch(
        candidate_id="",
        median_offset_m=float(np.median(dist_m)),
        matched_share=float(near.mean()),
        time_shift_s=shift_s,
        time_spread_s=spread,
    )


def find_replay(
    track: Track | FloatArray,
    candidates: Iterable[tuple[str, FloatArray]],
    *,
    max_median_offset_m: float = 2.0,
    max_offset_m: float = 5.0,
    min_matched_share: float = 0.8,
    max_time_spread_s: float = 2.0,
    min_shift_s: float = 600.0,
    min_points: int = 8,
) -> ReplayMatch | None:
    """The best candidate that `track` (or its fingerprint) replays, or None."""
    query = fingerprint(track) if isinstance(track, Track) else track
    if query.shape[0] < min_points:
        return None
    lo, hi = query[:, :2].min(axis=0), query[:, :2].max(axis=0)
    best: ReplayMatch | None = None
    for candidate_id, cand in candidates:
        if cand.shape[0] < 2:
            continue
        # Cheap reject: bounding boxes that do not overlap (about 100 m slack).
        if np.any(cand[:, :2].max(axis=0) < lo - 1e-3) or np.any(
            cand[:, :2].min(axis=0) > hi + 1e-3
        ):
            continue
        m = compare(query, cand, max_offset_m)
        if (
            m.median_offset_m <= max_median_offset_m
            and m.matched_share >= min_matched_share
            and m.time_spread_s <= max_time_spread_s
            and abs(m.time_shift_s) >= min_shift_s
            and (best is None or m.median_offset_m < best.median_offset_m)
        ):
            best = ReplayMatch(
                candidate_id,
                m.median_offset_m,
                m.matched_share,
                m.time_shift_s,
                m.time_spread_s,
            )
    return best
