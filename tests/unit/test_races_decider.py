"""The Race decider (schedule to results) and the pure live engine `RaceLive`."""

from __future__ import annotations

import dataclasses
import heapq
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from game import races
from game.errors import DomainError, Forbidden, InvalidCommand
from game.events import fold, from_data, to_data
from game.generate import Profile, generate
from game.pace import Activity, LiveCheck, Verdict, check_track, policy_for
from game.races import (
    Abort,
    Close,
    CountdownStarted,
    Disqualify,
    Finish,
    RaceAborted,
    RaceFinished,
    RaceLive,
    RacePaused,
    RaceResumed,
    RaceScheduled,
    RaceState,
    RaceStatus,
    Register,
    RunnerDisqualified,
    RunnerFinished,
    RunnerRegistered,
    ScheduleRace,
    StartCountdown,
    StoreFixes,
    StoreFixesBatch,
    Withdraw,
)
from game.track import Fix, Track

T0 = datetime(2026, 3, 7, 9, 0, tzinfo=UTC)
GUN = T0 + timedelta(seconds=10)
RACE = policy_for(Activity.RACE)


def at(seconds: float) -> datetime:
    """`seconds` after the gun."""
    return GUN + timedelta(seconds=seconds)


def schedule(**kw: Any) -> ScheduleRace:
    values: dict[str, Any] = {
        "race_id": "race1",
        "title": "Saturday Reverse 5k",
        "distance_m": 800.0,
        "scheduled_at": T0,
        "capacity": 10,
        "organiser_id": "org",
    }
    return ScheduleRace(**{**values, **kw})


def step(state: RaceState, command: Any, now: datetime) -> RaceState:
    return fold(races.evolve, state, races.decide(state, command, now))


def scheduled(*runners: str, capacity: int = 10) -> RaceState:
    state = step(races.initial_state(), schedule(capacity=capacity), T0 - timedelta(days=1))
    for r in runners:
        state = step(state, Register(r), T0 - timedelta(hours=1))
    return state


def counting_down(*runners: str) -> RaceState:
    """Registered runners, countdown started at T0: the gun is at GUN."""
    return step(scheduled(*runners), StartCountdown("org", 10.0), T0)


def error_code(state: RaceState, command: Any, now: datetime) -> str:
    with pytest.raises(DomainError) as err:
        races.decide(state, command, now)
    return err.value.code


@cache
def verdict(profile: Profile = Profile.HONEST_RECREATIONAL) -> Verdict:
    track = generate(profile, 1, GUN.timestamp(), 900.0)
    return check_track(track, RACE, now=float(track.t[-1]) + 5)


def finish(runner: str, time_s: float, status: str = "verified") -> Finish:
    v = verdict(Profile.CAR if status == "rejected" else Profile.HONEST_RECREATIONAL)
    if status == "review":
        v = dataclasses.replace(v, status="review")
    assert v.status == status
    return Finish(runner, time_s, 800.0, v)


# schedule and registration


def test_a_race_is_scheduled_with_a_trimmed_title() -> None:
    [e] = races.decide(races.initial_state(), schedule(title="  Reverse 5k "), T0)
    cutoff = 3600.0 + 1.2 * 800.0  # the default: an hour plus a slow backward walk
    assert e == RaceScheduled(
        "race1", "Reverse 5k", 800.0, T0.timestamp(), 10, "org", None, True, None, cutoff
    )
    assert races.evolve(races.initial_state(), e).status == RaceStatus.SCHEDULED


@pytest.mark.parametrize(
    "kw",
    [
        {"title": "ab"},
        {"title": "x" * 81},
        {"distance_m": 49.9},
        {"distance_m": 42_195.1},
        {"capacity": 0},
        {"capacity": 5001},
    ],
)
def test_an_invalid_race_is_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidCommand):
        races.decide(races.initial_state(), schedule(**kw), T0)


def test_a_race_cannot_be_scheduled_twice_nor_commanded_before_it_exists() -> None:
    assert error_code(scheduled(), schedule(), T0) == "race_exists"
    assert error_code(races.initial_state(), Register("ann"), T0) == "not_found"


def test_runners_register_until_the_race_is_full() -> None:
    state = scheduled("ann", capacity=2)
    assert error_code(state, Register("ann"), T0) == "already_registered"
    state = step(state, Register("bob"), T0)
    assert state.registered == ("ann", "bob")
    assert error_code(state, Register("cy"), T0) == "race_full"
    state = step(state, Withdraw("bob"), T0)
    assert state.registered == ("ann",)
    assert races.decide(state, Register("cy"), T0) == [RunnerRegistered("race1", "cy")]


def test_registration_stays_open_during_the_countdown() -> None:
    state = counting_down("ann")
    assert races.decide(state, Register("bob"), at(-1)) == [RunnerRegistered("race1", "bob")]


def test_registration_closes_at_the_gun_even_without_an_event() -> None:
    state = counting_down("ann")
    assert races.status_at(state, at(0).timestamp()) == RaceStatus.RUNNING
    assert error_code(state, Register("bob"), at(0)) == "registration_closed"
    assert error_code(state, Register("bob"), at(60)) == "registration_closed"


def test_registration_is_closed_once_running_or_over() -> None:
    state = step(counting_down("ann"), Abort("org", "storm"), at(5))
    assert error_code(state, Register("bob"), at(6)) == "registration_closed"


def test_withdrawing_needs_a_registration_and_a_race_that_is_not_over() -> None:
    state = counting_down("ann")
    assert error_code(state, Withdraw("bob"), at(-5)) == "not_registered"
    over = step(state, Abort("org", ""), at(-5))
    assert error_code(over, Withdraw("ann"), at(-4)) == "race_over"


def test_a_runner_out_on_the_course_cannot_withdraw() -> None:
    assert error_code(counting_down("ann"), Withdraw("ann"), at(1)) == "race_started"


# countdown, pause, abort


def test_the_countdown_sets_the_gun_and_the_race_runs_from_the_gun() -> None:
    [e] = races.decide(scheduled("ann"), StartCountdown("org", 10.0), T0)
    assert e == CountdownStarted("race1", GUN.timestamp(), "org")
    state = races.evolve(scheduled("ann"), e)
    assert state.status == RaceStatus.COUNTDOWN and state.start_at == GUN.timestamp()
    assert races.status_at(state, at(-0.001).timestamp()) == RaceStatus.COUNTDOWN
    assert races.status_at(state, at(0).timestamp()) == RaceStatus.RUNNING


@pytest.mark.parametrize("countdown_s", [2.9, 600.1, -1.0])
def test_a_countdown_lasts_3_to_600_seconds(countdown_s: float) -> None:
    with pytest.raises(InvalidCommand):
        races.decide(scheduled(), StartCountdown("org", countdown_s), T0)


def test_the_countdown_starts_only_once() -> None:
    assert error_code(counting_down(), StartCountdown("org"), at(-5)) == "bad_race_state"


def test_pauses_accumulate_the_paused_time() -> None:
    state = counting_down("ann")
    assert error_code(state, races.Pause("org"), at(-1)) == "bad_race_state"
    assert error_code(state, races.Resume("org"), at(1)) == "bad_race_state"
    [paused] = races.decide(state, races.Pause("org"), at(100))
    assert paused == RacePaused("race1", at(100).timestamp(), "org")
    state = races.evolve(state, paused)
    assert state.status == RaceStatus.PAUSED
    assert error_code(state, races.Pause("org"), at(101)) == "bad_race_state"
    [resumed] = races.decide(state, races.Resume("org"), at(130.5))
    assert resumed == RaceResumed("race1", at(130.5).timestamp(), 30.5, "org")
    state = races.evolve(state, resumed)
    state = step(state, races.Pause("org"), at(200))
    state = step(state, races.Resume("org"), at(210))
    assert state.status == RaceStatus.RUNNING and state.paused_at is None
    assert state.paused_s == pytest.approx(40.5)


def test_an_aborted_race_is_over() -> None:
    [e] = races.decide(counting_down("ann"), Abort("org", "  "), at(5))
    assert e == RaceAborted("race1", at(5).timestamp(), "org", "aborted")
    state = races.evolve(counting_down("ann"), e)
    assert state.status == RaceStatus.ABORTED
    assert error_code(state, Abort("org", "again"), at(6)) == "race_over"
    assert error_code(state, Close("org"), at(6)) == "race_over"
    assert error_code(state, finish("ann", 300.0), at(6)) == "bad_race_state"


# finishes, disqualifications, results


def test_a_finish_is_recorded_once_and_only_while_the_race_runs() -> None:
    state = counting_down("ann")
    assert error_code(state, finish("ann", 0.0), at(-1)) == "bad_race_state"
    done = finish("ann", 301.23456)
    [e] = races.decide(state, done, at(310))
    codes = [f.code for f in done.verdict.flags]
    flags = [f.to_dict() for f in done.verdict.flags]
    assert e == RunnerFinished("race1", "ann", 301.235, 800.0, "verified", 0, codes, flags)
    state = races.evolve(state, e)
    assert races.decide(state, finish("ann", 299.0), at(311)) == []  # a resent fix
    paused = step(state, races.Pause("org"), at(320))
    assert races.decide(paused, finish("ann", 299.0), at(321)) == []


def test_only_registered_runners_finish_or_send_fixes() -> None:
    state = counting_down("ann")
    with pytest.raises(Forbidden):
        races.decide(state, finish("zed", 300.0), at(310))
    with pytest.raises(Forbidden):
        races.decide(state, StoreFixes("zed", 0, 0, 9, 10), at(310))
    state = step(state, StoreFixes("ann", 0, 0, 9, 10), at(10))
    assert state.chunks == {"ann": 9}


def test_a_flush_stores_many_runners_chunks_in_one_event() -> None:
    state = counting_down("ann", "bob")
    assert races.decide(state, StoreFixesBatch(()), at(10)) == []
    with pytest.raises(Forbidden):  # all or nothing
        races.decide(
            state,
            StoreFixesBatch((StoreFixes("ann", 0, 1, 9, 9), StoreFixes("zed", 0, 1, 9, 9))),
            at(10),
        )
    batch = StoreFixesBatch((StoreFixes("ann", 0, 1, 9, 9), StoreFixes("bob", 0, 1, 4, 4)))
    [e] = races.decide(state, batch, at(10))
    assert e == races.FixesBatchStored(
        "race1",
        [
            {"runner_id": "ann", "chunk": 0, "first_seq": 1, "last_seq": 9, "count": 9},
            {"runner_id": "bob", "chunk": 0, "first_seq": 1, "last_seq": 4, "count": 4},
        ],
    )
    # a log written before batches (one `FixesStored` per runner) folds with the batched one
    first: list[races.RaceEvent] = [e, races.FixesStored("race1", "ann", 1, 10, 12, 3)]
    later = races.decide(
        fold(races.evolve, state, first),
        StoreFixesBatch((StoreFixes("bob", 1, 5, 7, 3),)),
        at(11),
    )
    log: list[Any] = [*first, *later]
    rebuilt = [from_data(x.type, orjson.loads(orjson.dumps(to_data(x)))) for x in log]
    assert rebuilt == log
    assert fold(races.evolve, state, rebuilt).chunks == {"ann": 12, "bob": 7}


def test_the_registered_set_follows_registrations_and_withdrawals() -> None:
    state = scheduled("ann", "bob", "cid")
    assert state.registered_set == frozenset(state.registered) == {"ann", "bob", "cid"}
    state = step(state, Withdraw("bob"), T0 - timedelta(minutes=30))
    assert state.registered == ("ann", "cid")
    assert state.registered_set == {"ann", "cid"}


def test_a_disqualified_runner_cannot_finish_and_is_disqualified_once() -> None:
    state = counting_down("ann", "bob")
    assert error_code(state, Disqualify("org", "zed", "x"), at(5)) == "not_registered"
    assert error_code(state, Disqualify("org", "ann", "  "), at(5)) == "invalid"
    [e] = races.decide(state, Disqualify("org", "ann", " shortcut "), at(5))
    assert e == RunnerDisqualified("race1", "ann", "org", "shortcut")
    state = races.evolve(state, e)
    assert error_code(state, Disqualify("org", "ann", "again"), at(6)) == "already_disqualified"
    assert races.decide(state, finish("ann", 300.0), at(310)) == []


def test_a_race_closes_only_after_the_gun() -> None:
    assert error_code(scheduled("ann"), Close("org"), T0) == "bad_race_state"
    assert error_code(counting_down("ann"), Close("org"), at(-1)) == "bad_race_state"


def test_results_rank_verified_and_review_finishers_by_time_then_dnf_and_dq() -> None:
    state = counting_down("dnf", "slow", "fast", "car", "dq", "mid")
    state = step(state, finish("slow", 400.0), at(400))
    state = step(state, finish("car", 90.0, "rejected"), at(90))
    state = step(state, finish("mid", 350.0, "review"), at(350))
    state = step(state, finish("fast", 300.0), at(300))
    state = step(state, Disqualify("org", "dq", "cut the course"), at(100))
    closed, *reviews = races.decide(state, Close("org"), at(900))
    assert [(type(e).__name__, e.runner_id) for e in reviews] == [("RaceFinishSentToReview", "mid")]
    assert isinstance(closed, RaceFinished) and closed.at == at(900).timestamp()
    assert [(r["place"], r["runner_id"], r["status"]) for r in closed.results] == [
        (1, "fast", "finished"),
        (2, "mid", "review"),
        (3, "slow", "finished"),
        (None, "dnf", "dnf"),
        (None, "car", "dq"),
        (None, "dq", "dq"),
    ]
    assert closed.results[0]["time_s"] == 300.0 and closed.results[3]["time_s"] is None
    state = races.evolve(state, closed)
    assert state.status == RaceStatus.FINISHED and list(state.results) == closed.results
    assert error_code(state, Close("org"), at(901)) == "race_over"


def test_equal_finish_times_are_ordered_by_runner_id() -> None:
    state = counting_down("bo", "al")
    state = step(state, finish("bo", 300.0), at(300))
    state = step(state, finish("al", 300.0), at(301))
    assert [r["runner_id"] for r in races.results(state)] == ["al", "bo"]


def test_a_finisher_disqualified_before_the_close_gets_no_place() -> None:
    state = counting_down("ann", "bob")
    state = step(state, finish("ann", 300.0), at(300))
    state = step(state, finish("bob", 320.0), at(320))
    state = step(state, Disqualify("org", "ann", "shortcut"), at(330))
    rows = [(r["place"], r["runner_id"], r["status"]) for r in races.results(state)]
    assert rows == [(1, "bob", "finished"), (None, "ann", "dq")]


def test_a_runner_can_be_disqualified_after_the_results() -> None:
    state = counting_down("ann", "bob")
    state = step(state, finish("ann", 300.0), at(300))
    state = step(state, Close("org"), at(600))
    [e] = races.decide(state, Disqualify("org", "ann", "doping"), at(900))
    assert isinstance(e, RunnerDisqualified)
    assert races.evolve(state, e).disqualified == {"ann": "doping"}


# the live engine


def shifted(track: Track, to_start: float) -> Track:
    return dataclasses.replace(track, t=track.t - track.t[0] + to_start)


def fixes_in_time_order(tracks: dict[str, Track]) -> list[tuple[str, Fix]]:
    streams = [[(f.t, rid, f) for f in tr.fixes()] for rid, tr in tracks.items()]
    return [(rid, f) for _, rid, f in heapq.merge(*streams, key=lambda x: (x[0], x[1]))]


def crossing_time(fixes: list[Fix], gun: float, distance_m: float) -> float | None:
    """Oracle: the race time at which the cumulative credited distance reaches `distance_m`,
    interpolated linearly between the fix before and the fix that crossed it."""
    check = LiveCheck(RACE)
    prev_t, prev_m = None, 0.0
    for f in fixes:
        if f.t < gun:
            continue
        check.add(f, f.t + 1.0)
        cum = check.distance_m
        if cum >= distance_m:
            if prev_t is None or cum == prev_m:
                return f.t - gun
            share = (distance_m - prev_m) / (cum - prev_m)
            return prev_t + share * (f.t - prev_t) - gun
        prev_t, prev_m = f.t, cum
    return None


@cache
def honest_field() -> dict[str, Track]:
    """Honest tracks recorded from 20 s before the gun (a warm-up), 1.2 km each."""
    gun = GUN.timestamp()
    field = {
        f"{p.value}-{seed}": shifted(generate(p, seed, 0.0, 1200.0), gun - 20.0)
        for p, seed in [
            (Profile.HONEST_RECREATIONAL, 2),
            (Profile.HONEST_RECREATIONAL, 3),
            (Profile.HONEST_TRAINED, 3),
            (Profile.HONEST_WALKER, 2),
        ]
    }
    return field


def feed(live: RaceLive, tracks: dict[str, Track]) -> dict[str, Finish]:
    finishes = {}
    for rid, fix in fixes_in_time_order(tracks):
        out = live.add_fix(rid, fix, fix.t + 1.0)
        if out.finish is not None:
            assert rid not in finishes, "a runner finishes once"
            finishes[rid] = out.finish
    return finishes


def test_finish_times_are_the_interpolated_crossing_times_after_the_gun() -> None:
    gun = GUN.timestamp()
    tracks = honest_field()
    finishes = feed(RaceLive(800.0, gun), tracks)
    assert set(finishes) == set(tracks)
    for rid, tr in tracks.items():
        expected = crossing_time(tr.fixes(), gun, 800.0)
        assert expected is not None
        assert finishes[rid].time_s == pytest.approx(expected, abs=1e-6), rid
        assert finishes[rid].distance_m == 800.0
        assert finishes[rid].verdict.status in ("verified", "review")


def test_paused_time_is_taken_off_the_finish_time() -> None:
    gun = GUN.timestamp()
    tracks = dict(list(honest_field().items())[:1])
    plain = feed(RaceLive(800.0, gun), tracks)
    live = RaceLive(800.0, gun)
    live.paused_s = 30.0
    paused = feed(live, tracks)
    [rid] = tracks
    assert paused[rid].time_s == pytest.approx(plain[rid].time_s - 30.0)


def test_running_on_through_a_pause_gains_nothing_over_stopping() -> None:
    """Distance covered while the race is paused is not credited: a runner who keeps going
    finishes no earlier than one who stands still (the pause comes off both times)."""
    gun = GUN.timestamp()
    track = honest_field()["honest_trained-3"]
    paused_at, length = gun + 60.0, 30.0
    keeps = [f for f in track.fixes() if f.t >= gun]
    before = [f for f in keeps if f.t < paused_at]
    stops = [
        *before,
        *(dataclasses.replace(before[-1], t=paused_at + k) for k in range(int(length))),
        *(dataclasses.replace(f, t=f.t + length) for f in keeps if f.t >= paused_at),
    ]

    def race(fixes: list[Fix]) -> tuple[Finish | None, list[str]]:
        live = RaceLive(800.0, gun)
        live.pause(paused_at)
        codes: list[str] = []
        for f in fixes:
            if live.paused_at is not None and f.t >= paused_at + length:
                live.resume(paused_at + length, length)
            out = live.add_fix("ann", f, f.t + 1.0)
            codes += [flag.code for flag in out.flags]
            if out.finish is not None:
                return out.finish, codes
        return None, codes

    kept, kept_codes = race(keeps)
    stopped, stopped_codes = race(stops)
    assert kept is not None and stopped is not None
    assert kept.time_s >= stopped.time_s - 3.0  # before the fix: 30 s ahead
    assert "moved_while_paused" in kept_codes and "moved_while_paused" not in stopped_codes


def test_a_scheduled_race_is_edited_field_by_field_until_its_countdown() -> None:
    state = scheduled("ann", "bob")
    later = T0 + timedelta(hours=2)
    [edited] = races.decide(state, races.EditRace("org", title=" Moved ", scheduled_at=later), T0)
    assert edited == races.RaceEdited(
        "race1", "org", {"title": "Moved", "scheduled_at": later.timestamp()}
    )
    after = races.evolve(state, edited)
    assert (after.title, after.scheduled_at, after.registered) == (
        "Moved",
        later.timestamp(),
        ("ann", "bob"),
    )
    assert races.decide(after, races.EditRace("org", title="Moved"), T0) == []  # no change
    assert error_code(after, races.EditRace("org", capacity=1), T0) == "capacity_below_registered"
    assert error_code(after, races.EditRace("org", cutoff_s=5.0), T0) == "bad_cutoff"
    going = step(after, StartCountdown("org", 10.0), T0)
    assert error_code(going, races.EditRace("org", capacity=8), T0) == "bad_race_state"


def test_a_runner_retires_is_dnf_and_out_of_the_running() -> None:
    state = step(counting_down("ann", "bob"), races.Retire("ann"), at(60))
    assert state.retired == {"ann"}
    assert error_code(state, races.Retire("ann"), at(61)) == "already_retired"
    assert error_code(state, races.Retire("zoe"), at(61)) == "not_registered"
    assert races.decide(state, finish("ann", 100.0), at(100)) == []  # no finish after retiring
    state = step(state, finish("bob", 100.0), at(100))
    assert error_code(state, races.Retire("bob"), at(101)) == "not_racing"
    closed = step(state, races.Close("org"), at(200))
    assert {r["runner_id"]: r["status"] for r in closed.results} == {
        "bob": "finished",
        "ann": "dnf",
    }
    assert error_code(counting_down("ann"), races.Retire("ann"), at(-5)) == "bad_race_state"
    live = RaceLive(800.0, GUN.timestamp())
    live.retire("ann")
    assert [s.status for s in live.standings(("ann", "bob"))] == ["running", "dnf"]


def test_the_cutoff_moves_with_every_pause() -> None:
    state = counting_down("ann")
    gun, cutoff = GUN.timestamp(), 3600.0 + 1.2 * 800.0
    assert races.cutoff_at(state, gun) == gun + cutoff
    state = step(state, races.Pause("org"), at(100))
    assert races.cutoff_at(state, gun + 130) == gun + cutoff + 30  # the clock stops
    state = step(state, races.Resume("org"), at(160))
    assert state.pauses == ((gun + 100, gun + 160),)
    assert races.cutoff_at(state, gun + 1000) == pytest.approx(gun + cutoff + 60)
    assert races.cutoff_at(scheduled("ann"), gun) is None  # no gun yet
    with pytest.raises(InvalidCommand):
        races.decide(races.initial_state(), schedule(cutoff_s=30.0), T0)


def test_fixes_before_the_gun_earn_nothing() -> None:
    gun = GUN.timestamp()
    early = shifted(honest_field()["honest_recreational-2"], gun - 1000.0)
    live = RaceLive(800.0, gun)
    for f in early.fixes():
        if f.t >= gun:
            break
        assert live.add_fix("ann", f, f.t + 1.0).distance_m == 0.0
    assert live.standings() == [races.Standing(1, "ann", 0.0, None, "running")]


def test_a_warm_up_before_the_gun_does_not_shorten_the_race() -> None:
    gun = GUN.timestamp()
    track = honest_field()["honest_trained-3"]
    late = shifted(track, gun - 120.0)  # ran two minutes before the gun
    finishes = feed(RaceLive(800.0, gun), {"ann": late})
    post_gun = Track.from_fixes([f for f in late.fixes() if f.t >= gun])
    expected = crossing_time(post_gun.fixes(), gun, 800.0)
    if expected is None:
        assert finishes == {}
    else:
        assert finishes["ann"].time_s == pytest.approx(expected, abs=1e-6)


def test_standings_rank_finishers_by_time_then_distance_then_first_to_reach() -> None:
    gun = GUN.timestamp()
    field = dict(honest_field())
    base = field["honest_recreational-2"]
    part = base.slice(0, len(base) // 3)
    field["z-first"] = shifted(part, gun + 5.0)  # same fixes as "a-second", a second earlier
    field["a-second"] = shifted(part, gun + 6.0)
    field["m-further"] = base.slice(0, len(base) // 2)
    live = RaceLive(800.0, gun)
    finishes = feed(live, field)
    standings = live.standings(("late-no-fix",))
    by_time = sorted(finishes, key=lambda r: finishes[r].time_s)
    assert [s.runner_id for s in standings] == [
        *by_time,
        "m-further",
        "z-first",
        "a-second",
        "late-no-fix",
    ]
    assert [s.rank for s in standings] == list(range(1, len(standings) + 1))
    first, second = standings[len(by_time) + 1], standings[len(by_time) + 2]
    assert first.distance_m == second.distance_m > 0
    assert all(s.status in ("finished", "review") for s in standings[: len(by_time)])
    assert all(s.time_s is not None for s in standings[: len(by_time)])
    assert standings[-1].distance_m == 0.0 and standings[-1].status == "running"


def test_a_car_finishes_rejected_and_stands_disqualified() -> None:
    gun = GUN.timestamp()
    car = shifted(generate(Profile.CAR, 1, 0.0, 3000.0), gun)
    honest = honest_field()["honest_trained-3"]
    live = RaceLive(800.0, gun)
    finishes = feed(live, {"car": car, "ann": honest})
    assert finishes["car"].verdict.status == "rejected"
    assert finishes["car"].time_s < finishes["ann"].time_s
    standings = live.standings()
    assert [(s.runner_id, s.status) for s in standings] == [
        ("ann", finishes["ann"].verdict.status.replace("verified", "finished")),
        ("car", "dq"),
    ]
    assert standings[1].time_s is None

    state = counting_down("ann", "car")
    for f in finishes.values():
        state = step(state, f, at(f.time_s))
    results = races.results(state)
    assert [(r["place"], r["runner_id"], r["status"]) for r in results][1] == (None, "car", "dq")


def test_ranking_matches_a_full_sort_of_the_standings_rules() -> None:
    gun = GUN.timestamp()
    field = dict(honest_field())
    car = shifted(generate(Profile.CAR, 1, 0.0, 3000.0), gun)
    base = field["honest_recreational-2"]
    field["car"] = car
    field["part"] = shifted(base.slice(0, len(base) // 3), gun + 5.0)
    field["twin"] = shifted(base.slice(0, len(base) // 3), gun + 5.0)  # a tie: by id
    live = RaceLive(800.0, gun)
    live.disqualify("cheat")
    feed(live, field)
    registered = ("late-no-fix", "part")
    rows = live.ranking(registered)
    runners = live._runners

    def key(rid: str) -> tuple[int, float, float, str]:  # the ordering rules, spelled out
        r = runners[rid]
        if r.dq or (r.finish is not None and r.finish.verdict.status == "rejected"):
            return (3, 0.0, 0.0, rid)
        if r.finish is not None:
            return (0, r.finish.time_s, 0.0, rid)
        return (1, -r.distance_m, r.reached_t, rid)

    assert [row[1] for row in rows] == sorted(runners, key=key)
    assert {"late-no-fix", "cheat", "car"} <= set(runners)
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1))
    assert live.standings(registered) == [races.Standing(*row) for row in rows]
    assert live.ranking(registered) == rows  # the same tuple again: no new runners


def test_a_runner_disqualified_live_never_finishes() -> None:
    gun = GUN.timestamp()
    live = RaceLive(800.0, gun)
    live.disqualify("ann")
    assert feed(live, {"ann": honest_field()["honest_trained-3"]}) == {}
    assert live.standings()[0].status == "dq"


# the log


RUNNERS = ["ann", "bob", "cy"]
commands = st.one_of(
    st.builds(lambda cap: schedule(capacity=cap), st.integers(0, 3)),
    st.builds(Register, st.sampled_from(RUNNERS)),
    st.builds(Withdraw, st.sampled_from(RUNNERS)),
    st.builds(StartCountdown, st.just("org"), st.sampled_from([3.0, 10.0, 1.0])),
    st.builds(races.Pause, st.just("org")),
    st.builds(races.Resume, st.just("org")),
    st.builds(Abort, st.just("org"), st.sampled_from(["", "storm"])),
    st.builds(Disqualify, st.just("org"), st.sampled_from(RUNNERS), st.sampled_from(["", "cut"])),
    st.builds(
        lambda r, t, s: ("finish", r, t, s),
        st.sampled_from(RUNNERS),
        st.floats(0, 900),
        st.sampled_from(["verified", "review", "rejected"]),
    ),
    st.builds(
        StoreFixes,
        st.sampled_from(RUNNERS),
        st.integers(0, 3),
        st.just(0),
        st.integers(0, 99),
        st.just(100),
    ),
    st.builds(
        lambda rs, seq: StoreFixesBatch(tuple(StoreFixes(r, 1, 0, seq, 10) for r in rs)),
        st.lists(st.sampled_from(RUNNERS), max_size=3, unique=True),
        st.integers(0, 99),
    ),
    st.builds(Close, st.just("org")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(commands, st.floats(0, 30)), max_size=20))
def test_live_state_equals_the_state_rebuilt_from_the_log(script: list[Any]) -> None:
    state, log, now = races.initial_state(), [], T0
    for command, dt in script:
        now += timedelta(seconds=dt)
        if isinstance(command, tuple):
            command = finish(*command[1:])
        try:
            new = races.decide(state, command, now)
        except DomainError:
            continue
        for e in new:
            state = races.evolve(state, e)
        log += new
        placed = [r for r in races.results(state) if r["place"] is not None]
        assert not {r["runner_id"] for r in placed} & set(state.disqualified)
    rebuilt = [from_data(e.type, orjson.loads(orjson.dumps(to_data(e)))) for e in log]
    assert fold(races.evolve, races.initial_state(), rebuilt) == state


def test_unknown_commands_are_invalid() -> None:
    with pytest.raises(InvalidCommand):
        races.decide(scheduled(), object(), T0)  # type: ignore[arg-type]


def test_an_engine_keeping_no_fixes_reaches_the_same_finishes_from_the_stored_ones() -> None:
    """A race room keeps no runner's fixes in memory (`keep_fixes=False`): at the crossing it
    runs the verdict on the fixes it stored, and the finish is the one an engine keeping
    every fix reaches, time and verdict, cheaters and warm-ups before the gun included."""
    gun = GUN.timestamp()
    field = dict(honest_field())
    for seed, profile in enumerate(("bike", "teleport", "car", "future_timestamps")):
        field[profile] = generate(Profile(profile), 20 + seed, gun + 2.0, 900.0)
    field["warm-up"] = shifted(field["honest_trained-3"], gun - 120.0)
    kept_live = RaceLive(800.0, gun)
    kept = feed(kept_live, field)
    lean = RaceLive(800.0, gun, keep_fixes=False)
    stored: dict[str, list[Fix]] = {rid: [] for rid in field}  # as the room stores them
    finishes = {}
    for rid, fix in fixes_in_time_order(field):
        stored[rid].append(fix)
        out = lean.add_fix(rid, fix, fix.t + 1.0)
        assert out.finish is None
        if out.crossing is not None:
            assert rid not in finishes, "a runner crosses once"
            finishes[rid] = out.crossing
    assert set(finishes) == set(kept)
    for rid, crossing in finishes.items():
        verdict = lean.verdict_from(crossing, stored[rid])  # fixes after the line left out
        finish = lean.finish(crossing, verdict)
        assert (finish.time_s, finish.distance_m) == (kept[rid].time_s, kept[rid].distance_m)
        assert finish.verdict == kept[rid].verdict, rid
    assert lean.ranking() == kept_live.ranking()
    with pytest.raises(ValueError, match="keeps no fixes"):
        lean.verdict(next(iter(field)), gun + 1000.0)
    rid, crossing = next(iter(finishes.items()))
    with pytest.raises(races.FixesMissing, match="are stored") as missing:  # no verdict
        lean.verdict_from(crossing, stored[rid][: crossing.fixes // 2])
    flag = missing.value.flag()  # what the room tells the race's moderators
    assert (flag.code, flag.hard_fail) == ("finish_unverified", False)
    assert flag.evidence == {
        "fixes": crossing.fixes,
        "stored": crossing.fixes // 2,
        "time_s": round(crossing.time_s, 3),
    }
