"""Drills: the template library, cue schedules, ack judging, scores and the group sync score."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from game import drill_sessions as ds
from game import drills
from game.errors import DomainError
from game.events import fold

NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)


def test_the_library_has_eight_valid_templates_for_every_level() -> None:
    assert len(drills.LIBRARY) >= 8
    assert {t.level for t in drills.LIBRARY} == set(drills.Level)
    for t in drills.LIBRARY:
        again = drills.compose(t.key, t.title, t.level, t.phases)
        assert again.duration_s == t.duration_s
        assert "soft surface" in t.safety
        if t.level == drills.Level.BEGINNER:
            assert "spotter" in t.safety


@pytest.mark.parametrize(
    ("phases", "fragment"),
    [
        ([], "1 to 12 phases"),
        ([drills.Phase(drills.Move.BACKPEDAL, 2)], "lasts 5 to 300"),
        ([drills.Phase(drills.Move.BACKPEDAL, 30, switch_cues=2)], "only switch_reaction"),
        ([drills.Phase(drills.Move.SWITCH_REACTION, 10, switch_cues=8)], "too many switch cues"),
        ([drills.Phase(drills.Move.REST, 300)] * 7, "at most 30 minutes"),
    ],
)
def test_a_coach_drill_outside_the_bounds_is_refused(
    phases: list[drills.Phase], fragment: str
) -> None:
    with pytest.raises(DomainError, match=fragment):
        drills.compose("mine", "My drill", drills.Level.INTERMEDIATE, phases)


@given(st.integers(0, 2**32 - 1))
def test_switch_cues_fall_inside_their_phase_and_apart(seed: int) -> None:
    tpl = drills.TEMPLATES["reflex-ladder"]
    cues = drills.schedule(tpl, 1000.0, random.Random(seed))
    assert cues == drills.schedule(tpl, 1000.0, random.Random(seed))  # same seed, same drill
    switch = [c for c in cues if c.prompt == "switch!"]
    assert len(switch) == sum(p.switch_cues for p in tpl.phases)
    times = [c.at for c in cues]
    assert times == sorted(times)
    assert times[0] >= 1000.0 and times[-1] < 1000.0 + tpl.duration_s
    starts = {1000.0 + 20, 1000.0 + 20 + 60 + 40}  # the two switch phases
    for c in switch:
        phase_start = max(s for s in starts if s <= c.at)
        assert phase_start + drills.MIN_CUE_GAP_S - 1e-6 <= c.at <= phase_start + 60 - 1.999
    gaps = [b.at - a.at for a, b in itertools.pairwise(switch)]
    assert all(g >= drills.MIN_CUE_GAP_S - 1e-3 for g in gaps if g < 30)


def test_acks_are_judged_early_absurd_late_duplicate_or_timed() -> None:
    cue = drills.Cue(3, 100.0, drills.Move.SWITCH_REACTION, "switch!", True)
    assert drills.judge_ack(cue, 100.25, already=False) == (250.0, None)
    assert drills.judge_ack(cue, 99.9, already=False)[1] == drills.AckProblem.EARLY
    assert drills.judge_ack(cue, 100.03, already=False)[1] == drills.AckProblem.ABSURD
    assert drills.judge_ack(cue, 104.0, already=False)[1] == drills.AckProblem.LATE
    assert drills.judge_ack(cue, 100.3, already=True)[1] == drills.AckProblem.DUPLICATE
    assert drills.judge_ack(None, 100.3, already=False)[1] == drills.AckProblem.UNKNOWN_CUE
    plain = drills.Cue(1, 90.0, drills.Move.BACKPEDAL, "backpedal", False)
    assert drills.judge_ack(plain, 90.5, already=False)[1] == drills.AckProblem.NOT_SCORED


def test_scores_from_known_reaction_times() -> None:
    s = drills.score_participant("p", 4, {1: 300.0, 2: 200.0, 3: 250.0}, [0.8, 0.6, 1.7])
    assert (s.hits, s.misses, s.median_ms, s.best_ms, s.steadiness) == (3, 1, 250.0, 200.0, 0.7)
    none = drills.score_participant("q", 2, {})
    assert (none.hits, none.misses, none.median_ms, none.best_ms) == (0, 2, None, None)


def test_a_tight_group_scores_higher_sync_than_a_loose_one() -> None:
    tight = {1: [250.0, 260.0, 255.0], 2: [300.0, 310.0, 305.0]}
    loose = {1: [150.0, 400.0, 900.0], 2: [200.0, 700.0, 350.0]}
    partial = {1: [250.0], 2: [300.0]}  # one of three reacts
    assert drills.group_sync_score(tight, 3) > 0.9
    assert drills.group_sync_score(tight, 3) > drills.group_sync_score(loose, 3)
    assert drills.group_sync_score(partial, 3) < drills.group_sync_score(tight, 3)
    assert drills.group_sync_score({}, 3) == 0.0


def test_a_drill_session_from_schedule_to_results() -> None:
    tpl = drills.TEMPLATES["switch-it"]
    events: list[ds.DrillEvent] = []

    def run(cmd: object) -> list[ds.DrillEvent]:
        state = fold(ds.evolve, ds.initial_state(), events)
        new = ds.decide(state, cmd, NOW)  # type: ignore[arg-type]
        events.extend(new)
        return new

    run(ds.ScheduleDrill("d1", tpl, "coach"))
    with pytest.raises(DomainError):
        run(ds.FinishDrill("coach"))  # not started
    started = run(ds.StartDrill("coach", 10.0, seed=7))[0]
    assert isinstance(started, ds.DrillStarted) and started.start_at == NOW.timestamp() + 10
    scored = [c["id"] for c in started.cues if c["scored"]]
    run(ds.RecordAcks("ann", {scored[0]: 250.0, scored[1]: 300.0}, [0.9]))
    assert run(ds.RecordAcks("ann", {scored[0]: 999.0})) == []  # a duplicate is not recorded
    run(ds.RecordAcks("bob", {scored[0]: 270.0}))
    finished = run(ds.FinishDrill("coach"))[0]
    assert isinstance(finished, ds.DrillFinished)
    by = {s["participant_id"]: s for s in finished.scores}
    assert by["ann"]["median_ms"] == 275.0 and by["ann"]["hits"] == 2
    assert by["ann"]["misses"] == len(scored) - 2 and by["ann"]["steadiness"] == 0.9
    assert by["bob"]["best_ms"] == 270.0
    assert 0 < finished.sync_score < 1
    state = fold(ds.evolve, ds.initial_state(), events)
    assert state.status == ds.DrillStatus.FINISHED and state.sync_score == finished.sync_score
