"""Benchmark the pace check against its peers, on the same generated 1 Hz tracks, in one process.

    .venv/bin/python bench/bench_pace.py [--tracks 100] [--runs 7] [--sessions 5]

Times (medians of several runs): the batch verdict `check_track` against gpxpy's
`GPXTrackSegment.get_moving_data()` + `length_2d()` (gpxpy objects built outside the timing),
the incremental `LiveCheck.add`, and checks the raw haversine step sum of `game.track` against
the `haversine` package. The batch and gpxpy runs alternate, so on a shared machine both see
the same load; their ratio is the median of the per-round ratios. With `--sessions N` the whole
measurement repeats N times and the table gives the median session (and the range). Prints a
markdown table (with the load average) and writes it to docs/benchmarks.md under `## Pace check`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
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


def paired_s(
    a: Callable[[], object], b: Callable[[], object], runs: int, budget_s: float
) -> tuple[float, float, float]:
    """Alternate `a` and `b`: (median time of a, median time of b, median of b / a per round)."""
    ta: list[float] = []
    tb: list[float] = []
    started = time.perf_counter()
    for _ in range(runs):
        for fn, times in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        if time.perf_counter() - started > 2 * budget_s:
            break
    ratio = statistics.median(y / x for x, y in zip(ta, tb, strict=True))
    return statistics.median(ta), statistics.median(tb), ratio


def main(argv: list[str] | None = None) -> str:
    """Run the benchmark and return the markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=100)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=1, help="repeat the whole measurement")
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
    sessions: list[tuple[float, float, float, float]] = []  # batch, peer, ratio, live
    loads: list[float] = []
    for _ in range(max(args.sessions, 1)):
        loads.append(os.getloadavg()[0])
        batch_s, peer_s, ratio = paired_s(batch, peer, args.runs, args.budget_s)
        live_s = median_s(live, args.runs, args.budget_s)
        sessions.append((fixes / batch_s, fixes / peer_s, ratio, fixes / live_s))
    loads.append(os.getloadavg()[0])

    worst = 0.0
    for track in tracks:
        ours = float(
            haversine_m(track.lat[:-1], track.lon[:-1], track.lat[1:], track.lon[1:]).sum()
        )
        pts = np.column_stack([track.lat, track.lon])
        theirs = float(haversine.haversine_vector(pts[:-1], pts[1:], haversine.Unit.METERS).sum())
        worst = max(worst, abs(ours - theirs) / theirs)

    def col(k: int, fmt: str) -> tuple[float, str]:
        values = sorted(s[k] for s in sessions)
        mid = statistics.median(values)
        text = fmt.format(mid)
        if len(values) > 1:
            text += f" ({fmt.format(values[0])} to {fmt.format(values[-1])})"
        return mid, text

    (batch_fps, batch_txt), (_, peer_txt) = col(0, "{:,.0f}"), col(1, "{:,.0f}")
    (ratio, ratio_txt), (live_fps, live_txt) = col(2, "{:.1f}x"), col(3, "{:,.0f}")
    rows = [
        ("batch `check_track`", f"{batch_txt} fixes/s", "≥ 1,000,000 fixes/s", batch_fps >= 1e6),
        ("gpxpy `get_moving_data` + `length_2d`", f"{peer_txt} fixes/s", "peer", None),
        ("batch / gpxpy (paired rounds)", ratio_txt, "≥ 2x", ratio >= 2),
        ("live `LiveCheck.add`", f"{live_txt} fixes/s", "≥ 200,000 fixes/s", live_fps >= 2e5),
        ("distance vs `haversine` (worst track)", f"{worst:.2e}", "≤ 0.1%", worst <= 1e-3),
    ]
    spread = " (range over sessions in brackets)" if len(sessions) > 1 else ""
    load_txt = ", ".join(f"{x:.1f}" for x in loads)
    lines = [
        HEADING,
        "",
        f"`.venv/bin/python bench/bench_pace.py` — {len(tracks)} generated 1 Hz backward runs, "
        f"{fixes:,} fixes; each session takes medians of up to {args.runs} runs, the table the "
        f"median of {len(sessions)} session(s){spread}; Python {sys.version.split()[0]}, "
        f"numpy {np.__version__}; {os.cpu_count()} cores shared with other work, 1-minute "
        f"load average {load_txt} at the session starts and the end.",
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
