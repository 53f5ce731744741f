"""The quality bar of the pace check: honest runs are never rejected, every cheat is caught.

Runs on real recordings (shared/data/tracks, time-scaled to backward pace) and on generated
tracks from `game.generate`. The default suite checks 510 honest tracks; `-m slow` sweeps more.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from game.generate import (
    CHEATER_PROFILES,
    EXPECTATIONS,
    HONEST_PROFILES,
    Profile,
    generate_run,
)
from game.pace import Activity, Verdict, check_track, policy_for
from game.replay import find_replay, fingerprint
from game.track import Track

START_T = 1_700_000_000.0
POLICY = policy_for(Activity.BACKWARD_RUN)
TRACKS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tracks"
#: Backward running is about a third slower: stretch forward recordings in time by 1/0.67.
BACKWARD_TIME_SCALE = 1.0 / 0.67
SEMICIRCLE_DEG = 180.0 / 2**31


def to_backward_pace(track: Track) -> Track:
    """The same path, run at backward pace: time stretched, reported speed shrunk."""
    t = track.t[0] + (track.t - track.t[0]) * BACKWARD_TIME_SCALE
    return replace(track, t=t, speed_mps=track.speed_mps / BACKWARD_TIME_SCALE)


def fenix5_track(name: str) -> Track:
    """A fenix 5 record CSV: semicircle positions, cadence in strides/min (doubled to steps)."""
    path = TRACKS / name
    if not path.is_file():
        pytest.skip(f"shared track data not found at {path.resolve()}")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    pdt = dt.timezone(dt.timedelta(hours=-7))
    t = [
        dt.datetime.strptime(r["timestamp"].replace(" PDT ", " "), "%a %b %d %H:%M:%S %Y")
        .replace(tzinfo=pdt)
        .timestamp()
        for r in rows
    ]
    return Track.from_arrays(
        t,
        [float(r["position_lat"]) * SEMICIRCLE_DEG for r in rows],
        [float(r["position_long"]) * SEMICIRCLE_DEG for r in rows],
        speed_mps=[float(r["speed"]) for r in rows],
        cadence_spm=[2.0 * float(r["cadence"]) for r in rows],
        hr_bpm=[float(r["heart_rate"]) for r in rows],
        ele_m=[float(r["altitude"]) for r in rows],
    )


def check(track: Track, now: float | None = None) -> Verdict:
    return check_track(track, POLICY, now=float(track.t[-1]) + 60.0 if now is None else now)


def honest_sweep(n: int, seed: int) -> tuple[Counter[str], list[str]]:
    """Statuses of `n` honest runs (all levels, phones and watches, 1-10 km)."""
    rng = np.random.default_rng(seed)
    statuses: Counter[str] = Counter()
    rejected: list[str] = []
    for i in range(n):
        profile = HONEST_PROFILES[i % len(HONEST_PROFILES)]
        distance_m = float(rng.uniform(1000, 10000))
        run = generate_run(profile, rng, START_T, distance_m)
        verdict = check(run.track, run.upload_t)
        statuses[verdict.status] += 1
        if verdict.status == "rejected":
            codes = [f.code for f in verdict.flags if f.points or f.hard_fail]
            rejected.append(f"#{i} {profile} {distance_m:.0f} m: {codes}")
    return statuses, rejected


@pytest.mark.parametrize("name", ["fenix5-forward-run-cadence.csv", "fenix5-walk-cadence.csv"])
def test_real_fenix5_recordings_at_backward_pace_are_not_rejected(name: str) -> None:
    track = fenix5_track(name)
    for candidate in (track, to_backward_pace(track)):
        assert check(candidate).status != "rejected"


def test_generated_honest_runs_are_never_rejected_and_rarely_reviewed() -> None:
    statuses, rejected = honest_sweep(510, seed=2024)
    n = sum(statuses.values())
    assert rejected == []
    assert statuses["review"] / n < 0.02, statuses


@pytest.mark.slow
def test_honest_sweep_of_thousands_of_runs() -> None:
    statuses, rejected = honest_sweep(4500, seed=7)
    assert rejected == []
    assert statuses["review"] / sum(statuses.values()) < 0.02, statuses


def _caught(profile: Profile, seeds: range) -> list[str]:
    """Descriptions of the runs of `profile` that the checks let through."""
    expected = EXPECTATIONS[profile]
    missed = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        run = generate_run(profile, rng, START_T, float(rng.uniform(3000, 8000)))
        verdict = check(run.track, run.upload_t)
        codes = {f.code for f in verdict.flags}
        if profile is Profile.REPLAY:
            assert run.source is not None
            match = find_replay(run.track, [("source", fingerprint(run.source))])
            codes |= {match.code} if match else set()
        if verdict.status not in expected.statuses or not codes & expected.codes:
            missed.append(f"seed {seed}: {verdict.status} {sorted(codes)}")
    return missed


@pytest.mark.parametrize("profile", CHEATER_PROFILES)
def test_every_cheater_profile_is_caught_with_its_code(profile: Profile) -> None:
    assert _caught(profile, range(12)) == []


@pytest.mark.slow
@pytest.mark.parametrize("profile", CHEATER_PROFILES)
def test_cheater_sweep(profile: Profile) -> None:
    assert _caught(profile, range(100, 300)) == []
