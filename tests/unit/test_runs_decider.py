"""The Run decider: given past events, a command decides the new events (or a DomainError)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from functools import cache
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from game import runs
from game.errors import Conflict, DomainError, Forbidden, InvalidCommand, NotFound
from game.events import fold, from_data, to_data
from game.generate import Profile, generate
from game.pace import Activity
from game.runs import (
    AppealRun,
    Decision,
    ReviewRun,
    RunAppealed,
    RunRecorded,
    RunRejected,
    RunSentToReview,
    RunState,
    RunVerified,
    SubmitRun,
)
from game.track import Track

T0 = 1_764_000_000.0  # 2025-11-24, a Monday


@cache
def make_track(profile: Profile = Profile.HONEST_RECREATIONAL, seed: int = 2) -> Track:
    """A generated 1.2 km track starting at T0 (cached: tracks are immutable)."""
    return generate(profile, seed, T0, 1200.0)


def mocked_after(track: Track, start: int) -> Track:
    """`track` with every fix from `start` on marked as a mock location."""
    mock = np.zeros(len(track), dtype=np.bool_)
    mock[start:] = True
    return dataclasses.replace(track, mock=mock)


def after_run(track: Track) -> datetime:
    return datetime.fromtimestamp(float(np.nanmax(track.t)) + 120.0, UTC)


def submit(
    track: Track, *, replay_of: str | None = None, run_id: str = "r1", runner_id: str = "ann"
) -> SubmitRun:
    return SubmitRun(run_id, runner_id, Activity.BACKWARD_RUN, track, replay_of=replay_of)


def given_events(events: list[Any]) -> RunState:
    return fold(runs.evolve, runs.initial_state(), events)


def submitted(track: Track, **kw: Any) -> tuple[RunState, list[Any]]:
    events = runs.decide(runs.initial_state(), submit(track, **kw), after_run(track))
    return given_events(events), events


def review(decision: Decision, reason: str = "looked at the map", **kw: Any) -> ReviewRun:
    return ReviewRun("mod", decision, reason, **kw)


# submission


def test_an_honest_run_is_recorded_and_verified_by_the_pace_check() -> None:
    track = make_track()
    state, events = submitted(track)
    recorded, verified = events
    assert isinstance(recorded, RunRecorded) and isinstance(verified, RunVerified)
    assert recorded.status == "verified" and recorded.fix_count == len(track)
    assert recorded.started_at == float(track.t[0]) and recorded.ended_at == float(track.t[-1])
    assert 1100 < recorded.distance_m < 1300
    assert recorded.record_eligible and "800m" in recorded.best_efforts_s
    assert verified.by == "pace_check" and verified.clean == (recorded.flags == [])
    assert verified.distance_m == recorded.distance_m
    assert verified.elapsed_s == recorded.elapsed_s
    assert verified.best_efforts_s == recorded.best_efforts_s
    assert state.status == "verified" and state.credited_distance_m == recorded.distance_m
    assert state.decisions == 0


def test_a_mock_location_run_is_sent_to_review_with_its_codes() -> None:
    state, events = submitted(make_track(Profile.MOCK_LOCATION, seed=0))
    recorded, follow = events
    assert recorded.status == "review"
    assert isinstance(follow, RunSentToReview)
    assert "mock_location" in follow.codes and follow.score == recorded.score
    assert state.status == "review" and state.credited_distance_m == 0.0


def test_a_car_is_rejected_but_keeps_its_best_efforts_for_a_moderator() -> None:
    state, events = submitted(make_track(Profile.CAR, seed=1))
    recorded, follow = events
    assert recorded.status == "rejected"
    assert {"400m", "mile"} <= recorded.best_efforts_s.keys()
    assert isinstance(follow, RunRejected) and follow.by == "pace_check"
    assert {"vehicle_speed", "superhuman_speed"} & set(follow.codes)
    assert state.status == "rejected" and state.credited_distance_m == 0.0


def test_a_replayed_honest_track_gets_a_replayed_track_flag_and_goes_to_review() -> None:
    honest, _ = submitted(make_track())
    state, events = submitted(make_track(), replay_of="r0")
    recorded, follow = events
    replay = [f for f in recorded.flags if f["code"] == "replayed_track"]
    assert replay and replay[0]["evidence"] == {"matches_run": "r0"}
    assert not replay[0]["hard_fail"]
    assert recorded.score == honest.score + runs.REPLAY_POINTS
    assert recorded.status == "review" and not recorded.record_eligible
    assert isinstance(follow, RunSentToReview) and "replayed_track" in follow.codes
    assert state.status == "review"


def test_a_replayed_car_track_stays_rejected() -> None:
    _, events = submitted(make_track(Profile.CAR, seed=1), replay_of="r0")
    assert events[0].status == "rejected" and isinstance(events[1], RunRejected)
    assert "replayed_track" in events[1].codes


def test_a_run_cannot_be_submitted_twice() -> None:
    state, _ = submitted(make_track())
    with pytest.raises(Conflict):
        runs.decide(state, submit(make_track()), after_run(make_track()))


@pytest.mark.parametrize(
    "command", [review(Decision.APPROVE), AppealRun("ann", "please look again")]
)
def test_reviewing_or_appealing_an_unknown_run_is_not_found(command: Any) -> None:
    with pytest.raises(NotFound) as err:
        runs.decide(runs.initial_state(), command, datetime.now(UTC))
    assert err.value.code == "not_found"


# moderator decisions


def test_a_moderator_approves_a_run_in_review_and_it_is_credited() -> None:
    state, _ = submitted(make_track(Profile.MOCK_LOCATION, seed=0))
    [verified] = runs.decide(state, review(Decision.APPROVE), datetime.now(UTC))
    assert isinstance(verified, RunVerified)
    assert verified.by == "mod" and verified.reason == "looked at the map" and not verified.clean
    assert verified.distance_m == state.distance_m
    after = runs.evolve(state, verified)
    assert after.status == "verified" and after.credited_distance_m == state.distance_m
    assert after.decisions == 1


def test_a_moderator_rejects_a_verified_run_and_its_credit_is_withdrawn() -> None:
    state, _ = submitted(make_track())
    [rejected] = runs.decide(state, review(Decision.REJECT), datetime.now(UTC))
    assert isinstance(rejected, RunRejected) and rejected.by == "mod"
    after = runs.evolve(state, rejected)
    assert after.status == "rejected" and after.credited_distance_m == 0.0
    assert after.credited_elapsed_s == 0.0 and after.decisions == 1


def test_approving_a_verified_run_or_rejecting_a_rejected_run_conflicts() -> None:
    verified, _ = submitted(make_track())
    rejected, _ = submitted(make_track(Profile.CAR, seed=1))
    with pytest.raises(Conflict):
        runs.decide(verified, review(Decision.APPROVE), datetime.now(UTC))
    with pytest.raises(Conflict):
        runs.decide(rejected, review(Decision.REJECT), datetime.now(UTC))


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_moderator_decision_needs_a_reason(reason: str) -> None:
    state, _ = submitted(make_track(Profile.MOCK_LOCATION, seed=0))
    with pytest.raises(InvalidCommand):
        runs.decide(state, review(Decision.APPROVE, reason), datetime.now(UTC))


def test_a_crop_credits_only_the_kept_fixes_after_a_fresh_pace_check() -> None:
    base = make_track()
    half = len(base) // 2
    track = mocked_after(base, half)
    state, events = submitted(track)
    assert state.status == "review" and "mock_location" in events[1].codes
    [verified] = runs.decide(
        state,
        review(Decision.CROP, crop_start=0, crop_stop=half, track=track),
        after_run(track),
    )
    assert isinstance(verified, RunVerified) and verified.by == "mod"
    assert verified.started_at == float(track.t[0])
    assert verified.ended_at == float(track.t[half - 1])
    assert 0 < verified.distance_m < 0.7 * state.distance_m
    assert verified.best_efforts_s == runs.best_efforts_s(track.slice(0, half))
    after = runs.evolve(state, verified)
    assert after.status == "verified" and after.credited_distance_m == verified.distance_m


def test_a_crop_that_still_fails_the_pace_check_is_refused() -> None:
    track = make_track(Profile.CAR, seed=1)
    state, _ = submitted(track)
    with pytest.raises(InvalidCommand, match="still fails"):
        runs.decide(
            state,
            review(Decision.CROP, crop_start=0, crop_stop=len(track), track=track),
            after_run(track),
        )


@pytest.mark.parametrize(
    ("start", "stop"),
    [(None, 10), (0, None), (-1, 10), (10, 10), (10, 5), (0, 1), (7, 8), (0, 10_000)],
)
def test_a_crop_outside_the_track_or_shorter_than_two_fixes_is_refused(
    start: int | None, stop: int | None
) -> None:
    track = make_track(Profile.MOCK_LOCATION, seed=0)
    state, _ = submitted(track)
    with pytest.raises(InvalidCommand):
        runs.decide(
            state,
            review(Decision.CROP, crop_start=start, crop_stop=stop, track=track),
            after_run(track),
        )


def test_a_crop_without_the_track_is_refused() -> None:
    state, _ = submitted(make_track(Profile.MOCK_LOCATION, seed=0))
    with pytest.raises(InvalidCommand):
        runs.decide(state, review(Decision.CROP, crop_start=0, crop_stop=5), datetime.now(UTC))


# appeals


def test_the_runner_appeals_a_rejected_run_which_goes_back_to_review_once() -> None:
    state, _ = submitted(make_track(Profile.CAR, seed=1))
    [appealed] = runs.decide(state, AppealRun("ann", "  it was me!  "), datetime.now(UTC))
    assert appealed == RunAppealed("r1", "ann", "it was me!")
    state = runs.evolve(state, appealed)
    assert state.status == "review" and state.appealed
    [rejected] = runs.decide(state, review(Decision.REJECT), datetime.now(UTC))
    state = runs.evolve(state, rejected)
    with pytest.raises(Conflict, match="already appealed"):
        runs.decide(state, AppealRun("ann", "again!"), datetime.now(UTC))


def test_only_the_runner_may_appeal() -> None:
    state, _ = submitted(make_track(Profile.CAR, seed=1))
    with pytest.raises(Forbidden):
        runs.decide(state, AppealRun("bob", "let me"), datetime.now(UTC))


def test_only_a_rejected_run_can_be_appealed() -> None:
    for track in (make_track(), make_track(Profile.MOCK_LOCATION, seed=0)):
        state, _ = submitted(track)
        with pytest.raises(Conflict):
            runs.decide(state, AppealRun("ann", "why?"), datetime.now(UTC))


def test_an_appeal_needs_a_message() -> None:
    state, _ = submitted(make_track(Profile.CAR, seed=1))
    with pytest.raises(InvalidCommand):
        runs.decide(state, AppealRun("ann", "   "), datetime.now(UTC))


# the log


def through_the_log(events: list[Any]) -> list[Any]:
    """Events as the store keeps them: JSON (orjson, like `server.store.db`) and back."""
    return [from_data(e.type, orjson.loads(orjson.dumps(to_data(e)))) for e in events]


TRACKS = (
    (Profile.HONEST_RECREATIONAL, 2),
    (Profile.HONEST_TRAINED, 3),
    (Profile.MOCK_LOCATION, 0),
    (Profile.CAR, 1),
)

commands = st.one_of(
    st.builds(
        lambda i, replay: ("submit", i, replay),
        st.integers(0, len(TRACKS) - 1),
        st.sampled_from([None, "r0"]),
    ),
    st.builds(
        lambda d, reason, a, b: ("review", d, reason, a, b),
        st.sampled_from(list(Decision)),
        st.sampled_from(["", "checked"]),
        st.integers(-2, 40),
        st.integers(-2, 500),
    ),
    st.builds(
        lambda who, msg: ("appeal", who, msg),
        st.sampled_from(["ann", "bob"]),
        st.sampled_from(["", "please"]),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(commands, max_size=8))
def test_live_state_equals_the_state_rebuilt_from_the_log(script: list[Any]) -> None:
    state, log = runs.initial_state(), []
    track = make_track()
    now = after_run(track)
    for step in script:
        if step[0] == "submit":
            track = make_track(*TRACKS[step[1]])
            command: Any = submit(track, replay_of=step[2])
        elif step[0] == "review":
            _, decision, reason, a, b = step
            command = review(decision, reason, crop_start=a, crop_stop=a + b, track=track)
        else:
            command = AppealRun(step[1], step[2])
        try:
            new = runs.decide(state, command, now)
        except DomainError:
            continue
        for e in new:
            state = runs.evolve(state, e)
        log += new
        assert state.credited_distance_m == 0.0 or state.status == "verified"
    assert fold(runs.evolve, runs.initial_state(), through_the_log(log)) == state
