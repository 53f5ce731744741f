"""The simulator's plan and time model, checked offline with the pace check itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clients.sdk import GPS_FIELDS
from clients.simulate import path_m, plan
from game.pace import Activity, policy_for
from game.pace.batch import check_track
from game.track import Track

START = 1_800_000_000.0


def _as_sent(fixes: list[dict[str, float | bool]], speedup: float) -> Track:
    """The fixes as the server receives them: `t` = gun + offset / speedup (server time)."""

    def col(key: str) -> list[float]:
        return [float(f[key]) if key in f else math.nan for f in fixes]

    return Track.from_arrays(
        [START + float(f["t"]) / speedup for f in fixes],
        col("lat"),
        col("lon"),
        mock=[bool(f.get("mock", False)) for f in fixes],
        acc_m=col("acc"),
        speed_mps=col("speed"),
        course_deg=col("course"),
        heading_deg=col("heading"),
        cadence_spm=col("cadence"),
    )


def test_the_plan_has_the_runners_cheaters_and_protocol_fixes_asked_for() -> None:
    runners = plan(runners=6, cheaters=2, distance_m=400, seed=1)
    assert [r.handle for r in runners] == [f"sim_{i:02d}" for i in range(1, 7)]
    assert [r.cheater for r in runners] == [False] * 4 + [True] * 2
    assert {r.kind for r in runners[:4]} == {"recreational", "trained", "walker"}
    assert [r.kind for r in runners[4:]] == ["car", "bike"]
    for r in runners:
        assert r.fixes and r.fixes[0]["t"] == 0.0
        assert all(set(f) <= GPS_FIELDS for f in r.fixes)
        ts = [float(f["t"]) for f in r.fixes]
        assert ts == sorted(ts)


def test_honest_runners_pass_the_race_pace_check_in_real_time() -> None:
    policy = policy_for(Activity.RACE)
    for r in plan(runners=4, cheaters=0, distance_m=400, seed=3):
        track = _as_sent(r.fixes, speedup=1.0)
        verdict = check_track(track, policy, now=float(np.nanmax(track.t)) + 1.0)
        assert verdict.status == "verified", (r.kind, [f.code for f in verdict.flags])


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("distance_m", [200.0, 400.0])
def test_cheaters_are_caught_by_the_finish_line(index: int, distance_m: float) -> None:
    policy = policy_for(Activity.RACE)
    cheater = plan(runners=2, cheaters=2, distance_m=distance_m, seed=5)[index]
    line = int(np.searchsorted(path_m(cheater.fixes), distance_m)) + 1
    track = _as_sent(cheater.fixes[:line], speedup=1.0)  # the verdict is given at the finish
    verdict = check_track(track, policy, now=float(np.nanmax(track.t)) + 1.0)
    assert verdict.status in ("review", "rejected"), cheater.kind


def test_a_speedup_multiplies_speeds_and_is_flagged() -> None:
    policy = policy_for(Activity.RACE)
    trained = plan(runners=2, cheaters=0, distance_m=400, seed=3)[1]
    assert trained.kind == "trained"
    track = _as_sent(trained.fixes, speedup=4.0)
    verdict = check_track(track, policy, now=float(np.nanmax(track.t)) + 1.0)
    assert verdict.status != "verified"
