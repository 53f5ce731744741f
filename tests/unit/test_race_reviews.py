"""Race finishes the pace check sent to review: queued with the results, decided by moderators."""

from __future__ import annotations

import dataclasses
from typing import Any

from game import races
from game.events import from_data
from game.pace import Flag
from game.races import (
    Close,
    Disqualify,
    FinishDecision,
    RaceFinishApproved,
    RaceFinished,
    RaceFinishRejected,
    RaceFinishSentToReview,
    RaceState,
    ReviewFinish,
)
from tests.unit.test_races_decider import at, counting_down, error_code, finish, step, verdict

SPIKE = Flag("speed_spike", "a burst faster than a backward runner", 40, False, {"max_mps": 7.9})


def doubted(runner: str, time_s: float) -> races.Finish:
    """A finish in review, with one flag and its evidence."""
    v = dataclasses.replace(verdict(), status="review", score=40, flags=(SPIKE,))
    return races.Finish(runner, time_s, 800.0, v)


def closed_with_review() -> RaceState:
    """ "ann" verified in 300 s, "mid" in review in 280 s, "bob" did not finish."""
    state = counting_down("ann", "mid", "bob")
    state = step(state, finish("ann", 300.0), at(300))
    state = step(state, doubted("mid", 280.0), at(280))
    return step(state, Close("org"), at(900))


def review(runner: str, decision: FinishDecision, reason: str = "checked the video") -> Any:
    return ReviewFinish("mod", runner, decision, reason)


def placings(results: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> list[tuple[Any, ...]]:
    return [(r["place"], r["runner_id"], r["status"]) for r in results]


def test_closing_sends_each_finish_in_review_to_the_moderators_with_its_evidence() -> None:
    state = counting_down("ann", "mid", "bob")
    state = step(state, finish("ann", 300.0), at(300))
    state = step(state, doubted("mid", 280.0), at(280))
    published, queued = races.decide(state, Close("org"), at(900))
    assert isinstance(published, RaceFinished)
    assert queued == RaceFinishSentToReview("race1", "mid", 280.0, 800.0, 40, [SPIKE.to_dict()])


def test_a_race_without_doubted_finishes_sends_nothing_to_review() -> None:
    state = step(counting_down("ann"), finish("ann", 300.0), at(300))
    assert [type(e) for e in races.decide(state, Close("org"), at(900))] == [RaceFinished]


def test_approving_a_finish_in_review_makes_it_a_finisher_in_the_results() -> None:
    state = closed_with_review()
    [approved] = races.decide(state, review("mid", FinishDecision.APPROVE), at(1000))
    assert isinstance(approved, RaceFinishApproved)
    assert (approved.by, approved.reason) == ("mod", "checked the video")
    assert placings(approved.results) == [
        (1, "mid", "finished"),
        (2, "ann", "finished"),
        (None, "bob", "dnf"),
    ]
    after = races.evolve(state, approved)
    assert after.finished["mid"].status == "verified"
    assert after.results == tuple(approved.results)


def test_rejecting_a_finish_in_review_unplaces_it_and_the_others_move_up() -> None:
    state = closed_with_review()
    [rejected] = races.decide(state, review("mid", FinishDecision.REJECT), at(1000))
    assert isinstance(rejected, RaceFinishRejected)
    assert placings(rejected.results) == [
        (1, "ann", "finished"),
        (None, "mid", "dq"),
        (None, "bob", "dnf"),
    ]
    assert races.evolve(state, rejected).finished["mid"].status == "rejected"


def test_a_decision_can_be_reversed_but_not_repeated() -> None:
    state = closed_with_review()
    state = step(state, review("mid", FinishDecision.REJECT), at(1000))
    assert error_code(state, review("mid", FinishDecision.REJECT), at(1001)) == "already_rejected"
    state = step(state, review("mid", FinishDecision.APPROVE, "the appeal holds"), at(1002))
    assert placings(state.results)[0] == (1, "mid", "finished")
    assert error_code(state, review("mid", FinishDecision.APPROVE), at(1003)) == "already_verified"


def test_only_finishes_the_pace_check_sent_to_review_are_decided() -> None:
    state = closed_with_review()
    assert error_code(state, review("ann", FinishDecision.REJECT), at(1000)) == "not_in_review"
    assert error_code(state, review("bob", FinishDecision.APPROVE), at(1000)) == "not_in_review"
    assert error_code(state, review("zed", FinishDecision.APPROVE), at(1000)) == "not_in_review"


def test_finishes_are_decided_only_once_the_results_are_out() -> None:
    state = step(counting_down("mid"), doubted("mid", 280.0), at(280))
    assert error_code(state, review("mid", FinishDecision.APPROVE), at(300)) == "bad_race_state"


def test_a_decision_needs_a_reason_and_a_disqualified_runner_stays_out() -> None:
    state = closed_with_review()
    assert error_code(state, review("mid", FinishDecision.APPROVE, "  "), at(1000)) == "invalid"
    state = step(state, Disqualify("mod", "mid", "cut the course"), at(1000))
    code = error_code(state, review("mid", FinishDecision.APPROVE), at(1001))
    assert code == "already_disqualified"


def test_a_finish_from_an_older_log_without_flags_still_folds() -> None:
    data = {
        "race_id": "race1",
        "runner_id": "mid",
        "time_s": 280.0,
        "distance_m": 800.0,
        "status": "review",
        "score": 40,
        "codes": ["speed_spike"],
    }
    evt = from_data("RunnerFinished", data)
    assert evt.flags == []
    state = races.evolve(counting_down("mid"), evt)
    assert state.finished["mid"].reviewable and state.finished["mid"].flags == ()
