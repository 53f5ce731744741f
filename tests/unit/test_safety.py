"""Safety rules: the sudden-stop (fall) detector and the alert decider."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from game import safety
from game.errors import Conflict, Forbidden, NotFound
from game.events import fold
from game.generate import HONEST_PROFILES, Profile, generate
from game.safety import FallDetector, SafetyPolicy
from game.track import EARTH_RADIUS_M, Fix, Track

M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
T0 = 1_700_000_000.0


def running(n: int, speed: float = 2.5, *, t0: float = T0, doppler: bool = True) -> list[Fix]:
    """Running north at `speed` m/s, one fix a second, metre-level noise."""
    rng = np.random.default_rng(7)
    out = []
    for k in range(n):
        north = speed * k + rng.normal(0, 0.7)
        out.append(
            Fix(
                t0 + k,
                52.0 + north / M_PER_DEG,
                13.0 + rng.normal(0, 0.7) / (M_PER_DEG * 0.6157),
                acc_m=4.0,
                speed_mps=max(0.0, speed + rng.normal(0, 0.15)) if doppler else None,
            )
        )
    return out


def stopped_at(last: Fix, n: int, *, every_s: float = 1.0, doppler: bool = True) -> list[Fix]:
    """`n` fixes at the spot of `last` (jitter under a metre), the device reading ~0 m/s."""
    rng = np.random.default_rng(11)
    return [
        Fix(
            last.t + every_s * (k + 1),
            last.lat + rng.normal(0, 0.4) / M_PER_DEG,
            last.lon + rng.normal(0, 0.4) / (M_PER_DEG * 0.6157),
            acc_m=4.0,
            speed_mps=abs(rng.normal(0, 0.05)) if doppler else None,
        )
        for k in range(n)
    ]


def feed(det: FallDetector, fixes: list[Fix]) -> list[tuple[int, safety.StopSignal]]:
    return [(i, s) for i, f in enumerate(fixes) for s in det.add(f)]


def track_fixes(track: Track) -> list[Fix]:
    return list(track.fixes())


def test_a_sudden_stop_that_lasts_is_a_fall() -> None:
    run = running(60)
    stop = stopped_at(run[-1], 10)
    got = feed(FallDetector(), run + stop)
    assert len(got) == 1
    index, signal = got[0]
    assert signal.kind == "fall"
    assert signal.at == stop[0].t  # the first stopped fix
    assert index == 60 + 5  # confirmed once stopped for 5 s (default policy)
    assert signal.evidence["from_mps"] >= 1.5 and signal.evidence["stopped_s"] >= 5.0


def test_a_short_stumble_is_not_a_fall() -> None:
    run = running(30)
    pause = stopped_at(run[-1], 3)
    after = running(30, t0=pause[-1].t + 1)
    # continue from the stumble spot
    shift = pause[-1].lat - after[0].lat
    after = [Fix(f.t, f.lat + shift, f.lon, f.acc_m, f.speed_mps) for f in after]
    assert feed(FallDetector(), run + pause + after) == []


def test_a_gradual_slow_down_is_not_a_fall() -> None:
    fixes: list[Fix] = []
    lat = 52.0
    for k in range(40):  # 3 m/s down to 0 over 20 s, then standing
        v = max(0.0, 3.0 - 0.15 * k)
        lat += v / M_PER_DEG
        fixes.append(Fix(T0 + k, lat, 13.0, acc_m=4.0, speed_mps=v))
    assert feed(FallDetector(), fixes) == []


def test_one_signal_per_stop_and_it_rearms_after_running_again() -> None:
    det = FallDetector()
    first = running(20)
    stop1 = stopped_at(first[-1], 20)
    assert len(feed(det, first + stop1)) == 1  # twenty stopped seconds: still one signal
    again = running(20, t0=stop1[-1].t + 1)
    stop2 = stopped_at(again[-1], 8)
    assert len(feed(det, again + stop2)) == 1


def test_silence_after_a_sudden_stop_is_confirmed_by_the_timer() -> None:
    det = FallDetector()
    run = running(20)
    stop = stopped_at(run[-1], 1)
    assert feed(det, run + stop) == []
    assert det.suspected_since == stop[0].t
    assert det.tick(stop[0].t + 4.0) == []
    (signal,) = det.tick(stop[0].t + 5.0)
    assert signal.kind == "fall" and det.tick(stop[0].t + 9.0) == []


def test_configurable_thresholds() -> None:
    policy = SafetyPolicy(stopped_s=2.0)
    run = running(20)
    got = feed(FallDetector(policy), run + stopped_at(run[-1], 5))
    assert [i for i, _ in got] == [20 + 2]
    with pytest.raises(ValueError):
        SafetyPolicy(stopped_mps=2.0, moving_mps=1.5)


def test_without_device_speed_positions_give_the_speed() -> None:
    run = running(30, doppler=False)
    stop = stopped_at(run[-1], 12, doppler=False)
    got = feed(FallDetector(), run + stop)
    assert len(got) == 1 and got[0][1].kind == "fall"


def test_duplicate_and_out_of_order_fixes_are_ignored() -> None:
    det = FallDetector()
    run = running(10)
    assert feed(det, run + run[:5]) == []


def _long_stops(track: Track, policy: SafetyPolicy) -> list[tuple[float, float]]:
    """(start, end) of the stretches where the device speed stays under `resume_mps` for at
    least `stopped_s` (the generator puts in crossings and shoelaces: 4-20 s at 0-0.3 m/s)."""
    out, start = [], None
    for t, v in zip(track.t.tolist(), track.speed_mps.tolist(), strict=True):
        if v < policy.resume_mps:
            start = t if start is None else start
        else:
            if start is not None and t - start >= policy.stopped_s:
                out.append((start, t))
            start = None
    return out


@pytest.mark.parametrize("profile", HONEST_PROFILES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_honest_generated_runs_signal_only_their_long_stops(profile: Profile, seed: int) -> None:
    """Running raises nothing; a stop of 5 s or more (a shoelace) reads as a fall, which is
    why the runner may cancel an alert within 15 s."""
    policy = SafetyPolicy()
    track = generate(profile, seed, T0, 2000.0)
    signals = [s for _, s in feed(FallDetector(policy), track_fixes(track))]
    stops = _long_stops(track, policy)
    assert len(signals) <= len(stops)
    for s in signals:
        assert any(a <= s.at < b for a, b in stops), s


def test_a_generated_run_then_a_fall() -> None:
    track = generate(HONEST_PROFILES[1], 4, T0, 600.0)
    fixes = track_fixes(track)
    stop = stopped_at(fixes[-1], 8)
    got = feed(FallDetector(), fixes + stop)
    index, signal = got[-1]
    assert index == len(fixes) + 5 and signal.at == stop[0].t  # confirmed 5 s after the stop


# the alert decider

NOW = datetime.fromtimestamp(T0, UTC)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def raised(kind: str = "fall") -> safety.SafetyState:
    state = safety.initial_state("race:r1")
    events = safety.decide(state, safety.RaiseAlert("a1", "runner", kind, {"x": 1.0}), NOW)
    return fold(safety.evolve, state, events)


def test_raise_once_per_runner_and_kind() -> None:
    state = raised()
    (alert,) = state.open_alerts("runner")
    assert (alert.kind, alert.at, alert.cancel_until) == ("fall", T0, T0 + 15.0)
    assert safety.decide(state, safety.RaiseAlert("a2", "runner", "fall"), at(1)) == []
    assert len(safety.decide(state, safety.RaiseAlert("a2", "runner", "no_progress"), at(1))) == 1
    with pytest.raises(Conflict):
        safety.decide(state, safety.RaiseAlert("a1", "other", "fall"), at(1))


def test_the_runner_cancels_within_the_window_only() -> None:
    state = raised()
    (evt,) = safety.decide(state, safety.CancelAlert("a1", "runner"), at(14.9))
    assert isinstance(evt, safety.AlertCancelled)
    after = safety.evolve(state, evt)
    assert after.alerts["a1"].status == safety.AlertStatus.CANCELLED and not after.open_alerts()
    with pytest.raises(Conflict) as late:
        safety.decide(state, safety.CancelAlert("a1", "runner"), at(15.1))
    assert late.value.code == "cancel_window_over"
    with pytest.raises(Forbidden):
        safety.decide(state, safety.CancelAlert("a1", "spotter"), at(1))
    with pytest.raises(NotFound) as unknown:
        safety.decide(state, safety.CancelAlert("nope", "runner"), at(1))
    assert unknown.value.code == "unknown_alert"


def test_spotters_and_moderators_acknowledge_once() -> None:
    state = raised()
    (evt,) = safety.decide(state, safety.AcknowledgeAlert("a1", "sp", "spotter"), at(20))
    state = safety.evolve(state, evt)
    assert state.alerts["a1"].status == safety.AlertStatus.ACKNOWLEDGED
    assert state.alerts["a1"].closed_by == "sp"
    with pytest.raises(Conflict) as again:
        safety.decide(state, safety.AcknowledgeAlert("a1", "mod", "moderator"), at(21))
    assert again.value.code == "alert_closed"
    with pytest.raises(Conflict):
        safety.decide(state, safety.CancelAlert("a1", "runner"), at(2))
    with pytest.raises(Forbidden):
        safety.decide(raised(), safety.AcknowledgeAlert("a1", "runner", "spotter"), at(1))


def test_unacknowledged_alerts_escalate_once() -> None:
    policy = SafetyPolicy(escalate_after_s=30.0)
    state = raised()
    assert safety.due_escalations(state, T0 + 29.0, policy) == []
    (cmd,) = safety.due_escalations(state, T0 + 30.0, policy)
    (evt,) = safety.decide(state, cmd, at(30))
    state = safety.evolve(state, evt)
    assert state.alerts["a1"].escalated and state.open_alerts()
    assert safety.due_escalations(state, T0 + 90.0, policy) == []
    assert safety.decide(state, cmd, at(31)) == []
