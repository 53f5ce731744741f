"""Replay detection: a time-shifted copy of a stored track is found; other runs are not."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from game.generate import Profile, generate, generate_run
from game.replay import REPLAY_CODE, find_replay, fingerprint
from game.track import Track

START_T = 1_700_000_000.0
EARTH_RADIUS_M = 6_371_008.8


def _same_route(rng: np.random.Generator, track: Track, start_t: float) -> Track:
    """Another runner on the same path: independent GPS error, their own pace."""
    n = len(track)
    walk = np.cumsum(rng.standard_normal((n, 2)), axis=0)
    err_m = 3.0 * (walk - walk.mean(axis=0)) / max(float(walk.std()), 1e-9)
    lat = track.lat + np.degrees(err_m[:, 1] / EARTH_RADIUS_M)
    lon = track.lon + np.degrees(err_m[:, 0] / (EARTH_RADIUS_M * np.cos(np.radians(track.lat))))
    # Their own pace: another average speed, and surges lasting about a minute.
    surges = np.convolve(rng.standard_normal(n + 59), np.ones(60) / np.sqrt(60), "valid")[1:]
    dt = np.diff(track.t) * rng.uniform(0.85, 1.15) * (1.0 + 0.1 * surges)
    return replace(track, t=start_t + np.concatenate([[0.0], np.cumsum(dt)]), lat=lat, lon=lon)


def test_fingerprint_resamples_by_distance() -> None:
    track = generate(Profile.HONEST_RECREATIONAL, 1, START_T, 3000.0)
    fp = fingerprint(track, step_m=25.0)
    assert fp.shape[1] == 3
    assert 100 <= fp.shape[0] <= 160  # about 3 km / 25 m, raw sums run a little long
    assert np.all(np.diff(fp[:, 2]) >= 0)


def test_fingerprint_of_a_single_fix_is_empty() -> None:
    track = generate(Profile.HONEST_RECREATIONAL, 1, START_T, 3000.0).slice(0, 1)
    assert fingerprint(track).shape == (0, 3)


def test_replay_is_matched_to_its_source_among_other_runs() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        run = generate_run(Profile.REPLAY, rng, START_T, float(rng.uniform(1000, 10000)))
        assert run.source is not None
        others = [
            (f"other-{i}", fingerprint(generate(Profile.HONEST_RECREATIONAL, rng, START_T, 3000.0)))
            for i in range(5)
        ]
        match = find_replay(run.track, [*others, ("source", fingerprint(run.source))])
        assert match is not None
        assert match.candidate_id == "source" and match.code == REPLAY_CODE
        assert match.time_shift_s > 86_000 and match.median_offset_m < 2.0


def test_another_runner_on_the_same_route_is_not_a_replay() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        source = generate(Profile.HONEST_RECREATIONAL, rng, START_T, 5000.0)
        other = _same_route(rng, source, START_T + 3 * 86_400)
        assert find_replay(other, [("source", fingerprint(source))]) is None


def test_runners_recording_together_are_not_replays() -> None:
    run = generate_run(Profile.REPLAY, 4, START_T, 3000.0)
    assert run.source is not None
    together = replace(run.track, t=run.source.t + 2.0)
    assert find_replay(together, [("partner", fingerprint(run.source))]) is None


def test_an_upload_is_not_a_replay_of_itself_from_elsewhere() -> None:
    track = generate(Profile.HONEST_TRAINED, 5, START_T, 5000.0)
    far = generate(Profile.HONEST_TRAINED, 6, START_T - 86_400, 5000.0)
    assert find_replay(track, [("far", fingerprint(far)), ("tiny", np.empty((0, 3)))]) is None
