"""The leaderboard interface: one Protocol, two backends (SQL in `sql.py`, Redis in `redis.py`).

Board ids are plain strings: `challenge:<id>`, `weekly:2026-W48`, `xp:all`, `club:<id>`.

Ordering follows `game.ranking`: score in the board's direction, then the smaller `reached_at`
(the event-log position that produced the score, so a rebuild gives the same order), then runner
id. Ranks are 1..N with no shared ranks.

Direction is passed on every write (`direction=`) and baked into the stored sort key, so reads
never need it. The projection that owns a board knows its metric (best time is
`Direction.LOWER`; distance and XP are `Direction.HIGHER`) and must use one direction per board:
the backends do not check it, and a board written with both would list one direction's entries
ahead of the other's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from game.ranking import Direction, Entry

__all__ = ["BoardEntry", "BoardPage", "Direction", "Entry", "Leaderboards"]


@dataclass(frozen=True, slots=True)
class BoardEntry:
    """One runner's place on a board: `rank` 1 is the best."""

    rank: int
    runner_id: str
    score: float
    reached_at: int


@dataclass(frozen=True, slots=True)
class BoardPage:
    """A page of a board and the board's total, read together.

    `version` changes whenever the board changes (None on a backend that keeps no versions).
    """

    total: int
    entries: list[BoardEntry]
    version: str | None


class Leaderboards(Protocol):
    """Ranked boards of one score per runner."""

    #: True when `page` versions are kept beside the boards, so they move with every process's
    #: writes (Redis). False when the backend keeps none: a cache of its pages must watch the
    #: writes itself (SQL, written by this process's projections).
    shared_versions: bool

    async def submit(
        self,
        board: str,
        runner_id: str,
        score: float,
        reached_at: int,
        *,
        direction: Direction,
    ) -> None:
        """Set the runner's absolute score (replacing any earlier one); replaying it is harmless."""
        ...

    async def submit_many(
        self, board: str, entries: Iterable[Entry], *, direction: Direction
    ) -> None:
        """`submit` for many runners at once (a rebuild, a bulk load); later entries win."""
        ...

    async def remove(self, board: str, runner_id: str) -> None:
        """Take the runner off the board (a no-op when absent)."""
        ...

    async def top(self, board: str, limit: int = 100, offset: int = 0) -> list[BoardEntry]:
        """Entries at ranks offset+1 .. offset+limit, best first."""
        ...

    async def page(
        self, board: str, limit: int = 100, offset: int = 0, *, unless: str | None = None
    ) -> BoardPage | None:
        """`top` and `count` of one moment, with the board's version. None when `unless` is the
        board's current version (the caller's copy is current); a backend without versions
        always reads."""
        ...

    async def rank(self, board: str, runner_id: str) -> BoardEntry | None:
        """The runner's entry, or None when they are not on the board."""
        ...

    async def around(self, board: str, runner_id: str, radius: int = 5) -> list[BoardEntry]:
        """The runner's entry with up to `radius` entries either side, best first.

        The window is clipped at the ends, not shifted: around the leader it starts at rank 1.
        Empty when the runner is not on the board.
        """
        ...

    async def count(self, board: str) -> int:
        """How many runners are on the board."""
        ...

    async def clear(self, board: str) -> None:
        """Remove every entry of one board."""
        ...

    async def clear_all(self) -> None:
        """Remove every entry of every board this backend holds (projection rebuild)."""
        ...


def check_page(limit: int, offset: int) -> None:
    """Refuse negative pages early, with the same message on every backend."""
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must be >= 0, got limit={limit} offset={offset}")


def check_radius(radius: int) -> None:
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
