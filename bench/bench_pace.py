"""Benchmark the pace check against its peers, on the same generated 1 Hz tracks, in one process.

    .venv/bin/python bench/bench_pace.py [--tracks 100] [--runs 5]

Times (medians of several runs): the batch verdict `check_track` against gpxpy's
`GPXTrackSegment.get_moving_data()` + `length_2d()` (gpxpy objects built outside the timing),
the incremental `LiveCheck.add`, and checks the raw haversine step sum of `game.track` against
the `haversine` package. Prints a markdown table and writes it to docs/benchmarks.md under
`## Pace check`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gpxpy.gpx
import haversine
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from game.generate import Device, Level, honest_track, runner_params  # noqa: E402
from game.pace import Activity, LiveCheck, check_track, policy_for  # noqa: E402
from game.track import Fix, Track, haversine_m  # noqa: E402

START_T = 1_700_000_000.0
HEADING = "## Pace check"
DOC = ROOT / "docs" / "benchmarks.md"


def make_tracks(n: int, seed: int) -> list[Track]:
    """Honest backward runs recorded by phones at 1 Hz, 3-8 km."""
    rng = np.random.default_rng(seed)
    tracks = []
    for _ in range(n):
        params = runner_params(rng, Level.RECREATIONAL, device=Device.PHONE)
        tracks.append(honest_track(params, rng, START_T, float(rng.uniform(3000, 8000))))
    return tracks


def to_gpxpy(track: Track) -> gpxpy.gpx.GPXTrackSegment:
    seg = gpxpy.gpx.GPXTrackSegment()
    seg.points = [
        gpxpy.gpx.GPXTrackPoint(
            float(la), float(lo), time=dt.datetime.fromtimestamp(float(t), dt.UTC)
        )
        for t, la, lo in zip(track.t, track.lat, track.lon, strict=True)
    ]
    return seg


def median_s(fn: Callable[[], object], runs: int, budget_s: float) -> float:
    """Median wall time of `fn` over up to `runs` runs, stopping early past `budget_s`."""
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - started > budget_s:
            break
    return statistics.median(times)


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark and return the markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=20.0, help="time cap per measurement")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)

    policy = policy_for(Activity.BACKWARD_RUN)
    tracks = make_tracks(args.tracks, args.seed)
    fixes = sum(len(t) for t in tracks)
    nows = [float(t.t[-1]) + 60.0 for t in tracks]
    segments = [to_gpxpy(t) for t in tracks]
    fix_lists = [t.fixes() for t in tracks]

    def batch() -> None:
        for track, now in zip(tracks, nows, strict=True):
            check_track(track, policy, now=now)

    def peer() -> None:
        for seg in segments:
            seg.get_moving_data()
            seg.length_2d()

    def live() -> None:
        for fl, now in zip(fix_lists, nows, strict=True):
            check = LiveCheck(policy)
            add: Callable[[Fix, float], object] = check.add
            for fix in fl:
                add(fix, now)

    batch()  # warm up caches and lazy imports
    batch_s = median_s(batch, args.runs, args.budget_s)
    peer_s = median_s(peer, args.runs, args.budget_s)
    live_s = median_s(live, args.runs, args.budget_s)

    worst = 0.0
    for track in tracks:
        ours = float(
            haversine_m(track.lat[:-1], track.lon[:-1], track.lat[1:], track.lon[1:]).sum()
        )
        pts = np.column_stack([track.lat, track.lon])
        theirs = float(haversine.haversine_vector(pts[:-1], pts[1:], haversine.Unit.METERS).sum())
        worst = max(worst, abs(ours - theirs) / theirs)

    batch_fps, peer_fps, live_fps = fixes / batch_s, fixes / peer_s, fixes / live_s
    rows = [
        (
            "batch `check_track`",
            f"{batch_fps:,.0f} fixes/s",
            "≥ 1,000,000 fixes/s",
            batch_fps >= 1e6,
        ),
        ("gpxpy `get_moving_data` + `length_2d`", f"{peer_fps:,.0f} fixes/s", "peer", None),
        ("batch / gpxpy", f"{batch_fps / peer_fps:.1f}x", "≥ 2x", batch_fps >= 2 * peer_fps),
        ("live `LiveCheck.add`", f"{live_fps:,.0f} fixes/s", "≥ 200,000 fixes/s", live_fps >= 2e5),
        ("distance vs `haversine` (worst track)", f"{worst:.2e}", "≤ 0.1%", worst <= 1e-3),
    ]
    lines = [
        HEADING,
        "",
        f"`.venv/bin/python bench/bench_pace.py` — {len(tracks)} generated 1 Hz backward runs, "
        f"{fixes:,} fixes, median of up to {args.runs} runs; Python {sys.version.split()[0]}, "
        f"numpy {np.__version__}.",
        "",
        "| measure | result | target | met |",
        "|---|---|---|---|",
        *[
            f"| {name} | {value} | {target} | {'' if ok is None else ('yes' if ok else 'NO')} |"
            for name, value, target, ok in rows
        ],
        "",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        write_section(table)
    return table


def write_section(section: str) -> None:
    """Replace (or append) the `## Pace check` section of docs/benchmarks.md."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
