"""The Challenge decider, the weekly rotation, and progress per kind."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from game import challenges as ch
from game.challenges import (
    ChallengeClosed,
    ChallengeCreated,
    ChallengeJoined,
    ChallengeLeft,
    ChallengeState,
    CloseChallenge,
    CreateChallenge,
    JoinChallenge,
    Kind,
    LeaveChallenge,
    RunFacts,
    Scope,
)
from game.errors import DomainError, InvalidCommand
from game.events import fold, from_data, to_data
from game.track import STANDARD_DISTANCES_M

BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 3, 2, tzinfo=UTC)
END = START + timedelta(days=7)
DURING = START + timedelta(days=1)
AFTER = END + timedelta(seconds=1)


def create(**kw: Any) -> CreateChallenge:
    values: dict[str, Any] = {
        "challenge_id": "c1",
        "title": "Reverse 10",
        "kind": Kind.DISTANCE,
        "target_value": 10_000,
        "starts_at": START,
        "ends_at": END,
        "tz": "UTC",
        "created_by": "mod",
    }
    return CreateChallenge(**{**values, **kw})


def given_events(*events: Any) -> ChallengeState:
    return fold(ch.evolve, ch.initial_state(), events)


def created(**kw: Any) -> ChallengeState:
    return given_events(*ch.decide(ch.initial_state(), create(**kw), DURING))


def joined(*runners: str) -> ChallengeState:
    state = created()
    for r in runners:
        [e] = ch.decide(state, JoinChallenge(r), DURING)
        state = ch.evolve(state, e)
    return state


def error_code(state: ChallengeState, command: Any, now: datetime) -> str:
    with pytest.raises(DomainError) as err:
        ch.decide(state, command, now)
    return err.value.code


# creation


def test_a_challenge_is_created_with_unix_times_and_a_trimmed_title() -> None:
    [e] = ch.decide(ch.initial_state(), create(title="  Reverse 10  ", tz="Europe/Berlin"), DURING)
    assert isinstance(e, ChallengeCreated)
    assert e.title == "Reverse 10" and e.kind == "distance" and e.scope == "official"
    assert e.starts_at == START.timestamp() and e.ends_at == END.timestamp()
    assert e.tz == "Europe/Berlin" and e.target_value == 10_000.0
    state = ch.evolve(ch.initial_state(), e)
    assert state.exists and not state.closed and state.members == frozenset()


@pytest.mark.parametrize(
    "kw",
    [
        {"title": "ab"},
        {"title": "  ab  "},
        {"title": "x" * 81},
        {"ends_at": START},
        {"ends_at": START - timedelta(hours=1)},
        {"ends_at": START + timedelta(days=367)},
        {"target_value": 0},
        {"target_value": -5},
        {"target_value": 1e8},
        {"kind": Kind.BEST_TIME, "distance_m": None},
        {"kind": Kind.BEST_TIME, "distance_m": 1500.0},
        {"kind": Kind.BEST_TIME, "distance_m": 1609.0},
        {"tz": "Mars/Olympus_Mons"},
        {"tz": ""},
        {"scope": Scope.CLUB, "club_id": None},
    ],
)
def test_an_invalid_challenge_is_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidCommand):
        ch.decide(ch.initial_state(), create(**kw), DURING)


def test_a_window_of_exactly_a_year_and_a_day_is_allowed() -> None:
    [e] = ch.decide(ch.initial_state(), create(ends_at=START + timedelta(days=366)), DURING)
    assert e.ends_at - e.starts_at == 366 * 86400


@pytest.mark.parametrize(("name", "distance_m"), sorted(STANDARD_DISTANCES_M.items()))
def test_a_best_time_challenge_runs_over_any_standard_distance(
    name: str, distance_m: float
) -> None:
    cmd = create(kind=Kind.BEST_TIME, target_value=0, distance_m=distance_m)
    [e] = ch.decide(ch.initial_state(), cmd, DURING)
    assert e.kind == "best_time" and ch.distance_name(e.distance_m) == name


def test_a_club_challenge_in_team_mode_names_its_club() -> None:
    cmd = create(scope=Scope.CLUB, club_id="club-9", team_mode=True)
    [e] = ch.decide(ch.initial_state(), cmd, DURING)
    assert e.scope == "club" and e.club_id == "club-9" and e.team_mode
    assert ch.evolve(ch.initial_state(), e).club_id == "club-9"


def test_leaving_after_the_window_but_before_the_close_is_refused() -> None:
    assert error_code(joined("ann"), LeaveChallenge("ann"), END) == "challenge_closed"


def test_a_challenge_cannot_be_created_twice() -> None:
    assert error_code(created(), create(), DURING) == "challenge_exists"


def test_commands_on_a_missing_challenge_are_not_found() -> None:
    assert error_code(ch.initial_state(), JoinChallenge("ann"), DURING) == "not_found"


# membership and closing


def test_runners_join_and_leave_an_open_challenge() -> None:
    state = created()
    [j] = ch.decide(state, JoinChallenge("ann"), DURING)
    assert j == ChallengeJoined("c1", "ann", DURING.timestamp())
    state = ch.evolve(state, j)
    assert state.members == {"ann"}
    assert error_code(state, JoinChallenge("ann"), DURING) == "already_joined"
    [left] = ch.decide(state, LeaveChallenge("ann"), DURING)
    assert left == ChallengeLeft("c1", "ann", DURING.timestamp())
    state = ch.evolve(state, left)
    assert state.members == frozenset()
    assert error_code(state, LeaveChallenge("ann"), DURING) == "not_joined"
    [again] = ch.decide(state, JoinChallenge("ann"), DURING)  # rejoining is fine
    assert ch.evolve(state, again).members == {"ann"}


def test_joining_before_the_window_opens_is_allowed() -> None:
    [e] = ch.decide(created(), JoinChallenge("ann"), START - timedelta(days=1))
    assert isinstance(e, ChallengeJoined)


def test_nobody_joins_once_the_window_ended() -> None:
    assert error_code(created(), JoinChallenge("ann"), END) == "challenge_closed"


def test_a_challenge_closes_only_after_its_window_with_the_given_standings() -> None:
    state = joined("ann")
    assert error_code(state, CloseChallenge(), DURING) == "challenge_running"
    standings = [{"rank": 1, "runner_id": "ann", "value": 12_000.0}]
    [closed] = ch.decide(state, CloseChallenge(standings), AFTER)
    assert closed == ChallengeClosed("c1", AFTER.timestamp(), standings)
    state = ch.evolve(state, closed)
    assert state.closed
    assert error_code(state, CloseChallenge(), AFTER) == "challenge_closed"
    assert error_code(state, JoinChallenge("bob"), AFTER) == "challenge_closed"
    assert error_code(state, LeaveChallenge("ann"), AFTER) == "challenge_closed"


def test_a_closed_challenge_refuses_joins_even_inside_its_window() -> None:
    state = dataclasses.replace(joined("ann"), closed=True)
    assert error_code(state, JoinChallenge("bob"), DURING) == "challenge_closed"


# the weekly rotation


def test_an_iso_week_in_berlin_runs_monday_midnight_to_monday_midnight_local() -> None:
    start, end = ch.iso_week_window(2026, 10, BERLIN)
    assert start == datetime(2026, 3, 2, tzinfo=BERLIN)
    assert start.utcoffset() == timedelta(hours=1)
    assert start.astimezone(UTC) == datetime(2026, 3, 1, 23, tzinfo=UTC)
    assert end - start == timedelta(days=7)


def test_the_week_that_springs_forward_in_berlin_lasts_167_hours() -> None:
    start, end = ch.iso_week_window(2026, 13, BERLIN)  # DST starts Sunday 29 March 2026
    assert (start.utcoffset(), end.utcoffset()) == (timedelta(hours=1), timedelta(hours=2))
    assert end.timestamp() - start.timestamp() == 167 * 3600
    assert end.astimezone(UTC) == datetime(2026, 3, 29, 22, tzinfo=UTC)


def test_the_week_that_falls_back_in_berlin_lasts_169_hours() -> None:
    start, end = ch.iso_week_window(2026, 43, BERLIN)  # DST ends Sunday 25 October 2026
    assert end.timestamp() - start.timestamp() == 169 * 3600


def test_consecutive_berlin_weeks_tile_the_time_line_without_gaps() -> None:
    windows = [ch.iso_week_window(2026, w, BERLIN) for w in range(1, 54)]
    for (_, end), (nxt, _) in itertools.pairwise(windows):
        assert end.timestamp() == nxt.timestamp()


def test_week_53_exists_in_2026_and_ends_at_week_1_of_2027() -> None:
    start, end = ch.iso_week_window(2026, 53, BERLIN)
    assert start.date() == date(2026, 12, 28)
    assert end == ch.iso_week_window(2027, 1, BERLIN)[0]
    cmd = ch.weekly_challenge(2026, 53, BERLIN)
    assert cmd.challenge_id == "weekly-2026-W53"
    [e] = ch.decide(ch.initial_state(), cmd, start)
    assert e.ends_at == end.timestamp()


def test_week_53_does_not_exist_in_2025() -> None:
    with pytest.raises(ValueError):
        ch.iso_week_window(2025, 53, BERLIN)


def test_the_weekly_challenge_is_a_valid_official_challenge_from_the_rotation() -> None:
    cmd = ch.weekly_challenge(2026, 13, BERLIN)
    tpl = ch.weekly_template(2026, 13)
    assert cmd.challenge_id == "weekly-2026-W13" and cmd.template == tpl.key
    assert cmd.title == f"{tpl.title} · week 13" and cmd.tz == "Europe/Berlin"
    assert (cmd.starts_at, cmd.ends_at) == ch.iso_week_window(2026, 13, BERLIN)
    assert cmd.scope == Scope.OFFICIAL and cmd.created_by == "scheduler"
    [e] = ch.decide(ch.initial_state(), cmd, cmd.starts_at)
    assert e.template == tpl.key and e.kind == tpl.kind.value


def test_the_rotation_cycles_through_every_template_week_by_week_across_years() -> None:
    weeks = [(2026, w) for w in range(45, 54)] + [(2027, w) for w in range(1, 6)]
    keys = [ch.weekly_template(y, w).key for y, w in weeks]
    n = len(ch.WEEKLY_ROTATION)
    assert all(keys[i] != keys[i + 1] for i in range(len(keys) - 1))
    assert all(keys[i] == keys[i + n] for i in range(len(keys) - n))
    assert set(keys) == {t.key for t in ch.WEEKLY_ROTATION}


def test_every_template_makes_a_valid_challenge() -> None:
    year, week = 2026, 1
    seen = set()
    while len(seen) < len(ch.WEEKLY_ROTATION):
        cmd = ch.weekly_challenge(year, week, BERLIN)
        ch.decide(ch.initial_state(), cmd, cmd.starts_at)
        seen.add(cmd.template)
        week += 1


# progress per kind


RUNS = [
    RunFacts("a", 1.0, 3000.0, 1200.0, best_time_s=700.0),
    RunFacts("b", 2.0, 5500.0, 2400.0, best_time_s=None),
    RunFacts("c", 3.0, 2000.0, 800.0, best_time_s=650.5),
]


@pytest.mark.parametrize(
    ("kind", "value", "target", "complete"),
    [
        (Kind.DISTANCE, 10_500.0, 10_000, True),
        (Kind.DISTANCE, 10_500.0, 10_501, False),
        (Kind.TIME, 4400.0, 3600, True),
        (Kind.SESSIONS, 3.0, 3, True),
        (Kind.SESSIONS, 3.0, 4, False),
        (Kind.BEST_TIME, 650.5, 1, True),
    ],
)
def test_progress_and_completion_per_kind(
    kind: Kind, value: float, target: float, complete: bool
) -> None:
    assert ch.progress_value(kind, RUNS) == value
    assert ch.is_complete(kind, value, target) is complete


def test_drills_count_drills_not_runs() -> None:
    assert ch.progress_value(Kind.DRILLS, RUNS, drills=2) == 2.0
    assert not ch.is_complete(Kind.DRILLS, 2.0, 3)
    assert ch.is_complete(Kind.DRILLS, 3.0, 3)


def test_no_runs_score_zero_but_a_best_time_without_the_distance_has_no_score() -> None:
    assert ch.progress_value(Kind.DISTANCE, []) == 0.0
    assert ch.progress_value(Kind.SESSIONS, []) == 0.0
    assert ch.progress_value(Kind.BEST_TIME, []) is None
    assert ch.progress_value(Kind.BEST_TIME, [RUNS[1]]) is None
    assert not ch.is_complete(Kind.BEST_TIME, None, 1)
    assert not ch.is_complete(Kind.DISTANCE, None, 1)


# the log


commands = st.one_of(
    st.builds(
        lambda title, days: ("create", title, days),
        st.sampled_from(["Reverse 10", "ab"]),
        st.integers(-1, 3),
    ),
    st.builds(lambda r: ("join", r), st.sampled_from(["ann", "bob", "cy"])),
    st.builds(lambda r: ("leave", r), st.sampled_from(["ann", "bob", "cy"])),
    st.just(("close",)),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(commands, st.integers(0, 12)), max_size=14))
def test_live_state_equals_the_state_rebuilt_from_the_log(script: list[Any]) -> None:
    state, log = ch.initial_state(), []
    for step, day in script:
        now = START + timedelta(days=day)
        command: Any
        if step[0] == "create":
            command = create(title=step[1], ends_at=START + timedelta(days=step[2]))
        elif step[0] == "join":
            command = JoinChallenge(step[1])
        elif step[0] == "leave":
            command = LeaveChallenge(step[1])
        else:
            command = CloseChallenge([{"rank": 1, "runner_id": "ann"}])
        try:
            new = ch.decide(state, command, now)
        except DomainError:
            continue
        for e in new:
            state = ch.evolve(state, e)
        log += new
    rebuilt = [from_data(e.type, orjson.loads(orjson.dumps(to_data(e)))) for e in log]
    assert fold(ch.evolve, ch.initial_state(), rebuilt) == state


def test_a_rotation_of_chosen_templates_cycles_through_them_alone() -> None:
    rotation = ch.rotation_of(["three-sessions", "reverse-10k"])
    assert [t.key for t in rotation] == ["three-sessions", "reverse-10k"]
    templates = {ch.weekly_challenge(2026, w, BERLIN, rotation=rotation).template for w in (1, 2)}
    assert templates == {"three-sessions", "reverse-10k"}


@pytest.mark.parametrize("keys", [[], ["no-such-week"], ["reverse-10k", "reverse-10k"]])
def test_a_rotation_names_known_templates_once_each(keys: list[str]) -> None:
    with pytest.raises(ValueError, match="weekly rotation"):
        ch.rotation_of(keys)
