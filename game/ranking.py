"""Ordering rules shared by race standings and leaderboards.

An entry is `(runner_id, score, reached_at)`. `reached_at` is the event-log position of the event
that produced the score, so it is the same on every rebuild. Entries order by:

1. score, in the board's `Direction` (higher-is-better for distance and XP, lower-is-better for
   best times);
2. then whoever reached that score first (smaller `reached_at`);
3. then runner id (code-point order, which equals UTF-8 byte order and PostgreSQL's "C" collation).

Runner ids are unique on a board, so the order is total and ranks are 1..N with no shared ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

#: reached_at is a 64-bit signed event position in the store: 0 <= reached_at <= MAX_REACHED_AT.
MAX_REACHED_AT = 2**63 - 1


class Direction(StrEnum):
    """Which way a board's score is better."""

    HIGHER = "higher"  # distance, XP, points
    LOWER = "lower"  # best time


@dataclass(frozen=True, slots=True)
class Entry:
    """A runner's score on one board, before ranking."""

    runner_id: str
    score: float
    reached_at: int


@dataclass(frozen=True, slots=True)
class Ranked:
    """A runner's place in a standing: `rank` 1 is the best."""

    rank: int
    runner_id: str
    score: float
    reached_at: int


def check_score(score: float) -> float:
    """The score as a finite float with -0.0 folded into 0.0; raises ValueError on NaN or inf."""
    value = float(score)
    if not math.isfinite(value):
        raise ValueError(f"a score must be a finite number, not {score!r}")
    return value + 0.0  # -0.0 + 0.0 == +0.0, so both zeros order and encode alike


def check_reached_at(reached_at: int) -> int:
    """The tie-break position, checked to fit a signed 64-bit column (ValueError otherwise)."""
    if isinstance(reached_at, bool) or not isinstance(reached_at, int):
        raise ValueError(f"reached_at must be an int event position, not {reached_at!r}")
    if not 0 <= reached_at <= MAX_REACHED_AT:
        raise ValueError(f"reached_at must be in 0..2**63-1, not {reached_at}")
    return reached_at


def order_value(score: float, direction: Direction) -> float:
    """The score mapped so that smaller is always better (negated on higher-is-better boards)."""
    value = check_score(score)
    return -value + 0.0 if direction is Direction.HIGHER else value


def sort_key(
    score: float, reached_at: int, runner_id: str, direction: Direction
) -> tuple[float, int, str]:
    """Ascending key: the best entry has the smallest key."""
    return (order_value(score, direction), reached_at, runner_id)


def is_better(a: Entry, b: Entry, direction: Direction) -> bool:
    """Whether `a` ranks strictly ahead of `b`."""
    return sort_key(a.score, a.reached_at, a.runner_id, direction) < sort_key(
        b.score, b.reached_at, b.runner_id, direction
    )


def rank_entries(entries: Iterable[Entry], direction: Direction) -> list[Ranked]:
    """Rank entries best first; the result does not depend on the input order.

    Raises ValueError when a runner appears twice: a standing holds one score per runner.
    """
    ordered = sorted(entries, key=lambda e: sort_key(e.score, e.reached_at, e.runner_id, direction))
    seen: set[str] = set()
    for e in ordered:
        if e.runner_id in seen:
            raise ValueError(f"runner {e.runner_id!r} appears twice in one standing")
        seen.add(e.runner_id)
    return [
        Ranked(i, e.runner_id, check_score(e.score), e.reached_at)
        for i, e in enumerate(ordered, start=1)
    ]
