"""Ordering rules shared by standings and leaderboards: direction, tie-breaks, dense ranks."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from game.ranking import (
    MAX_REACHED_AT,
    Direction,
    Entry,
    Ranked,
    check_reached_at,
    check_score,
    is_better,
    order_value,
    rank_entries,
    sort_key,
)


def test_higher_is_better_puts_the_longest_distance_first() -> None:
    ranked = rank_entries(
        [Entry("a", 5_000.0, 1), Entry("b", 12_000.0, 2), Entry("c", 8_000.0, 3)],
        Direction.HIGHER,
    )
    assert [r.runner_id for r in ranked] == ["b", "c", "a"]
    assert [r.rank for r in ranked] == [1, 2, 3]


def test_lower_is_better_puts_the_fastest_time_first() -> None:
    ranked = rank_entries(
        [Entry("a", 301.5, 1), Entry("b", 299.0, 2), Entry("c", 420.0, 3)], Direction.LOWER
    )
    assert [r.runner_id for r in ranked] == ["b", "a", "c"]


@pytest.mark.parametrize("direction", list(Direction))
def test_a_tie_goes_to_whoever_reached_the_score_first(direction: Direction) -> None:
    ranked = rank_entries([Entry("zed", 100.0, 7), Entry("amy", 100.0, 9)], direction)
    assert [r.runner_id for r in ranked] == ["zed", "amy"]


def test_a_tie_at_the_same_position_goes_to_the_smaller_runner_id_in_byte_order() -> None:
    ranked = rank_entries(
        [Entry("b", 1.0, 4), Entry("B", 1.0, 4), Entry("a", 1.0, 4)], Direction.HIGHER
    )
    assert [r.runner_id for r in ranked] == ["B", "a", "b"]


def test_ranks_are_one_to_n_with_no_shared_ranks_even_when_all_scores_tie() -> None:
    ranked = rank_entries([Entry(f"r{i}", 3.0, 10 - i) for i in range(10)], Direction.HIGHER)
    assert [r.rank for r in ranked] == list(range(1, 11))
    assert [r.reached_at for r in ranked] == sorted(r.reached_at for r in ranked)


def test_a_runner_twice_in_one_standing_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        rank_entries([Entry("a", 1.0, 1), Entry("a", 2.0, 2)], Direction.HIGHER)


def test_an_empty_standing_ranks_to_nothing() -> None:
    assert rank_entries([], Direction.LOWER) == []


def test_negative_scores_order_like_numbers() -> None:
    ranked = rank_entries(
        [Entry("a", -1.0, 1), Entry("b", -10.0, 2), Entry("c", 0.5, 3)], Direction.HIGHER
    )
    assert [r.runner_id for r in ranked] == ["c", "a", "b"]


def test_both_zeros_are_one_score() -> None:
    assert check_score(-0.0) == 0.0 and math.copysign(1.0, check_score(-0.0)) == 1.0
    assert math.copysign(1.0, order_value(0.0, Direction.HIGHER)) == 1.0
    ranked = rank_entries([Entry("a", -0.0, 2), Entry("b", 0.0, 1)], Direction.HIGHER)
    assert ranked == [Ranked(1, "b", 0.0, 1), Ranked(2, "a", 0.0, 2)]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_score_that_is_not_a_finite_number_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        check_score(bad)


@pytest.mark.parametrize("bad", [-1, MAX_REACHED_AT + 1, 1.5, True])
def test_reached_at_must_be_a_64_bit_event_position(bad: object) -> None:
    with pytest.raises(ValueError, match="reached_at"):
        check_reached_at(bad)  # type: ignore[arg-type]


def test_reached_at_accepts_the_whole_signed_64_bit_range() -> None:
    assert check_reached_at(0) == 0
    assert check_reached_at(MAX_REACHED_AT) == MAX_REACHED_AT


def test_is_better_agrees_with_the_sort_key() -> None:
    a, b = Entry("a", 10.0, 5), Entry("b", 10.0, 6)
    assert is_better(a, b, Direction.LOWER) and not is_better(b, a, Direction.LOWER)
    assert sort_key(10.0, 5, "a", Direction.HIGHER) == (-10.0, 5, "a")


_entries = st.lists(
    st.tuples(
        st.sampled_from([0.0, 1.5, 2.0, -3.0, 1e9]),  # few values: many ties
        st.integers(0, 5),
        st.text(alphabet="abAB09", min_size=1, max_size=3),
    ),
    max_size=40,
    unique_by=lambda t: t[2],
)


@given(_entries, st.sampled_from(list(Direction)), st.randoms(use_true_random=False))
def test_the_ranking_does_not_depend_on_the_order_entries_arrive_in(
    raw: list[tuple[float, int, str]], direction: Direction, rng: random.Random
) -> None:
    entries = [Entry(runner, score, at) for score, at, runner in raw]
    shuffled = entries[:]
    rng.shuffle(shuffled)
    ranked = rank_entries(entries, direction)
    assert rank_entries(shuffled, direction) == ranked
    assert [r.rank for r in ranked] == list(range(1, len(entries) + 1))
    for better, worse in itertools.pairwise(ranked):
        assert is_better(
            Entry(better.runner_id, better.score, better.reached_at),
            Entry(worse.runner_id, worse.score, worse.reached_at),
            direction,
        )
