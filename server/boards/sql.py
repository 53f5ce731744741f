"""Leaderboards in the `board_entries` table: the embedded default, on SQLite and PostgreSQL.

One row per (board, runner). The index `(board, order_key, reached_at, runner_id)` lists a board
best first whatever its direction, because `order_key` is the score negated on
higher-is-better boards. Costs, N entries on the board:

- submit, remove: one upsert or delete by primary key, O(log N).
- top(limit, offset): an index walk, O(offset + limit): deep pages cost more than the first.
- rank: the runner's row by primary key, then a count of the index entries strictly ahead of it
  (a row-value range, index-only on PostgreSQL once vacuumed): O(rank). Cheap near the top,
  tens of milliseconds deep in a million-entry board; that is the price of the embedded default,
  and the Redis backend answers in O(log N).
- around: the rank, then `radius` entries either side by keyset, O(rank + radius).
- count: O(N) index entries.

Each plain method is its own transaction. The `*_in` methods run inside the caller's transaction,
so a projection moves its board and its checkpoint together, and never commit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from sqlalchemy import Select, delete, func, literal, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from game.ranking import Direction, Entry, check_reached_at, check_score, order_value
from server.boards.base import BoardEntry, BoardPage, check_page, check_radius
from server.store.db import writer
from server.store.tables import StoredBoardEntry

BOARD_ENTRIES = StoredBoardEntry.__table__  # type: ignore[attr-defined]
_C = BOARD_ENTRIES.c
_ORDER = (_C.order_key, _C.reached_at, _C.runner_id)
#: Rows per executemany in submit_many; keeps one statement's memory bounded.
_BATCH = 5000


class SqlLeaderboards:
    """`Leaderboards` on the SQLAlchemy async engine of `server.store.db.create_engine`."""

    #: No versions: this backend's pages are cached against this process's projection runner.
    shared_versions = False

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._autocommit_reads = engine.dialect.name == "postgresql"

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads. On PostgreSQL it skips BEGIN/ROLLBACK (two round trips):
        under READ COMMITTED each statement takes its own snapshot inside a transaction too."""
        async with self.engine.connect() as conn:
            if self._autocommit_reads:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    # -- writes -----------------------------------------------------------------------------

    async def submit(
        self,
        board: str,
        runner_id: str,
        score: float,
        reached_at: int,
        *,
        direction: Direction,
    ) -> None:
        async with self.engine.connect() as raw:
            conn = await writer(raw)
            async with conn.begin():
                await self.submit_in(conn, board, runner_id, score, reached_at, direction=direction)

    async def submit_in(
        self,
        conn: AsyncConnection,
        board: str,
        runner_id: str,
        score: float,
        reached_at: int,
        *,
        direction: Direction,
    ) -> None:
        """`submit` inside a transaction the caller owns."""
        await self.submit_many_in(
            conn, board, [Entry(runner_id, score, reached_at)], direction=direction
        )

    async def submit_many(
        self, board: str, entries: Iterable[Entry], *, direction: Direction
    ) -> None:
        async with self.engine.connect() as raw:
            conn = await writer(raw)
            async with conn.begin():
                await self.submit_many_in(conn, board, entries, direction=direction)

    async def submit_many_in(
        self,
        conn: AsyncConnection,
        board: str,
        entries: Iterable[Entry],
        *,
        direction: Direction,
    ) -> None:
        """`submit_many` inside a transaction the caller owns; later entries win."""
        latest: dict[str, dict[str, Any]] = {}
        for e in entries:  # one row per runner: an upsert batch may not touch a row twice
            latest.pop(e.runner_id, None)
            latest[e.runner_id] = _row(board, e, direction)
        rows = list(latest.values())
        insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(BOARD_ENTRIES)
        stmt = stmt.on_conflict_do_update(
            index_elements=[_C.board, _C.runner_id],
            set_={
                "score": stmt.excluded.score,
                "order_key": stmt.excluded.order_key,
                "reached_at": stmt.excluded.reached_at,
            },
        )
        for start in range(0, len(rows), _BATCH):
            await conn.execute(stmt, rows[start : start + _BATCH])

    async def remove(self, board: str, runner_id: str) -> None:
        async with self.engine.connect() as raw:
            conn = await writer(raw)
            async with conn.begin():
                await self.remove_in(conn, board, runner_id)

    async def remove_in(self, conn: AsyncConnection, board: str, runner_id: str) -> None:
        await conn.execute(
            delete(BOARD_ENTRIES).where(_C.board == board, _C.runner_id == runner_id)
        )

    async def clear(self, board: str) -> None:
        async with self.engine.connect() as raw:
            conn = await writer(raw)
            async with conn.begin():
                await self.clear_in(conn, board)

    async def clear_in(self, conn: AsyncConnection, board: str) -> None:
        await conn.execute(delete(BOARD_ENTRIES).where(_C.board == board))

    async def clear_all(self) -> None:
        async with self.engine.connect() as raw:
            conn = await writer(raw)
            async with conn.begin():
                await self.clear_all_in(conn)

    async def clear_all_in(self, conn: AsyncConnection) -> None:
        """Empty every board (a projection's `reset`)."""
        await conn.execute(delete(BOARD_ENTRIES))

    # -- reads ------------------------------------------------------------------------------

    async def top(self, board: str, limit: int = 100, offset: int = 0) -> list[BoardEntry]:
        async with self._reading() as conn:
            return await self.top_in(conn, board, limit, offset)

    async def top_in(
        self, conn: AsyncConnection, board: str, limit: int = 100, offset: int = 0
    ) -> list[BoardEntry]:
        check_page(limit, offset)
        if limit == 0:
            return []
        stmt = _entries(board).order_by(*_ORDER).limit(limit).offset(offset)
        rows = (await conn.execute(stmt)).all()
        return [_entry(offset + i, r) for i, r in enumerate(rows, start=1)]

    async def page(
        self, board: str, limit: int = 100, offset: int = 0, *, unless: str | None = None
    ) -> BoardPage:
        """`top` and `count` on one connection (one snapshot on SQLite). No versions: `unless`
        is ignored and the page is always read."""
        check_page(limit, offset)
        async with self._reading() as conn:
            entries = await self.top_in(conn, board, limit, offset)
            return BoardPage(await self.count_in(conn, board), entries, None)

    async def rank(self, board: str, runner_id: str) -> BoardEntry | None:
        async with self._reading() as conn:
            return await self.rank_in(conn, board, runner_id)

    async def rank_in(self, conn: AsyncConnection, board: str, runner_id: str) -> BoardEntry | None:
        found = await _locate(conn, board, runner_id)
        return None if found is None else found[0]

    async def around(self, board: str, runner_id: str, radius: int = 5) -> list[BoardEntry]:
        async with self._reading() as conn:
            return await self.around_in(conn, board, runner_id, radius)

    async def around_in(
        self, conn: AsyncConnection, board: str, runner_id: str, radius: int = 5
    ) -> list[BoardEntry]:
        check_radius(radius)
        found = await _locate(conn, board, runner_id)
        if found is None:
            return []
        me, key = found
        if radius == 0:
            return [me]
        mine = tuple_(*(literal(v, c.type) for v, c in zip(key, _ORDER, strict=True)))
        above = (
            _entries(board)
            .where(tuple_(*_ORDER) < mine)
            .order_by(*(c.desc() for c in _ORDER))
            .limit(radius)
        )
        below = _entries(board).where(tuple_(*_ORDER) > mine).order_by(*_ORDER).limit(radius)
        before = (await conn.execute(above)).all()
        after = (await conn.execute(below)).all()
        return (
            [_entry(me.rank - i, r) for i, r in reversed(list(enumerate(before, start=1)))]
            + [me]
            + [_entry(me.rank + i, r) for i, r in enumerate(after, start=1)]
        )

    async def count(self, board: str) -> int:
        async with self._reading() as conn:
            return await self.count_in(conn, board)

    async def count_in(self, conn: AsyncConnection, board: str) -> int:
        stmt = select(func.count()).select_from(BOARD_ENTRIES).where(_C.board == board)
        return int((await conn.execute(stmt)).scalar_one())


async def _locate(
    conn: AsyncConnection, board: str, runner_id: str
) -> tuple[BoardEntry, tuple[float, int, str]] | None:
    """The runner's entry and sort key, in one statement: its row plus a count of rows ahead."""
    me = BOARD_ENTRIES.alias("me")
    ahead = BOARD_ENTRIES.alias("ahead")
    better = (
        select(func.count())
        .select_from(ahead)
        .where(
            ahead.c.board == me.c.board,
            tuple_(ahead.c.order_key, ahead.c.reached_at, ahead.c.runner_id)
            < tuple_(me.c.order_key, me.c.reached_at, me.c.runner_id),
        )
        .scalar_subquery()
    )
    stmt = select(
        me.c.runner_id, me.c.score, me.c.reached_at, me.c.order_key, better.label("better")
    ).where(me.c.board == board, me.c.runner_id == runner_id)
    row = (await conn.execute(stmt)).first()
    if row is None:
        return None
    return _entry(int(row.better) + 1, row), (row.order_key, row.reached_at, row.runner_id)


def _entries(board: str) -> Select[Any]:
    return select(_C.runner_id, _C.score, _C.reached_at).where(_C.board == board)


def _row(board: str, e: Entry, direction: Direction) -> dict[str, Any]:
    return {
        "board": board,
        "runner_id": e.runner_id,
        "score": check_score(e.score),
        "order_key": order_value(e.score, direction),
        "reached_at": check_reached_at(e.reached_at),
    }


def _entry(rank: int, row: Any) -> BoardEntry:
    return BoardEntry(rank, row.runner_id, float(row.score), int(row.reached_at))
