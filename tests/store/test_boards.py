"""The leaderboard contract runs against every backend: SQL on SQLite and on the real PostgreSQL,
and Redis sorted sets on the real Redis. `game.ranking.rank_entries` is the oracle."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from sqlalchemy import select

from game.ranking import Direction, Entry, rank_entries, sort_key
from server.boards import leaderboards_from_settings
from server.boards.base import BoardEntry, Leaderboards
from server.boards.redis import RedisLeaderboards, decode_member, encode_member
from server.boards.sql import BOARD_ENTRIES, SqlLeaderboards
from server.config import Settings
from server.store.db import create_engine, writer
from server.store.migrate import upgrade

HIGHER, LOWER = Direction.HIGHER, Direction.LOWER
BOARD = "challenge:c1"


@contextlib.asynccontextmanager
async def _sql(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlLeaderboards]:
    if request.param == "sql-sqlite":
        url = f"sqlite:///{tmp_path / 'boards.db'}"
        await asyncio.to_thread(upgrade, url)
    else:
        url = request.getfixturevalue("_pg_schema")
    engine = create_engine(url)
    sql = SqlLeaderboards(engine)
    try:
        await sql.clear_all()  # the PostgreSQL database is shared by the session
        yield sql
    finally:
        await sql.clear_all()
        await engine.dispose()


@pytest.fixture(params=["sql-sqlite", "sql-postgres", "redis"])
async def boards(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Leaderboards]:
    if request.param != "redis":
        async with _sql(request, tmp_path) as sql:
            yield sql
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    backend = RedisLeaderboards(client, prefix=f"test:{uuid.uuid4().hex}")
    try:
        yield backend
    finally:
        await backend.clear_all()
        await client.aclose()


@pytest.fixture(params=["sql-sqlite", "sql-postgres"])
async def sql_boards(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[SqlLeaderboards]:
    async with _sql(request, tmp_path) as sql:
        yield sql


def _oracle(entries: Iterable[Entry], direction: Direction) -> list[BoardEntry]:
    return [
        BoardEntry(r.rank, r.runner_id, r.score, r.reached_at)
        for r in rank_entries(entries, direction)
    ]


def _distances(n: int) -> list[Entry]:
    """n runners with distinct distances, submitted in no particular order."""
    entries = [Entry(f"runner-{i:03d}", 1000.0 + 37.5 * ((i * 7) % n), i + 1) for i in range(n)]
    random.Random(n).shuffle(entries)
    return entries


async def _submit_all(
    boards: Leaderboards, entries: Iterable[Entry], direction: Direction, board: str = BOARD
) -> None:
    for e in entries:
        await boards.submit(board, e.runner_id, e.score, e.reached_at, direction=direction)


async def test_top_pages_through_the_board_best_first(boards: Leaderboards) -> None:
    entries = _distances(25)
    await _submit_all(boards, entries, HIGHER)
    expected = _oracle(entries, HIGHER)

    pages = [await boards.top(BOARD, limit=10, offset=o) for o in (0, 10, 20)]

    assert pages[0] == expected[:10]
    assert pages[1] == expected[10:20]
    assert pages[2] == expected[20:]
    assert await boards.top(BOARD, limit=100) == expected
    assert await boards.top(BOARD, limit=5, offset=25) == []
    assert await boards.top(BOARD, limit=0) == []


async def test_an_empty_or_unknown_board_has_no_entries(boards: Leaderboards) -> None:
    assert await boards.top("weekly:2026-W48") == []
    assert await boards.count("weekly:2026-W48") == 0
    assert await boards.rank("weekly:2026-W48", "nobody") is None
    assert await boards.around("weekly:2026-W48", "nobody") == []


async def test_a_negative_page_is_refused(boards: Leaderboards) -> None:
    with pytest.raises(ValueError, match="offset"):
        await boards.top(BOARD, limit=10, offset=-1)
    with pytest.raises(ValueError, match="radius"):
        await boards.around(BOARD, "x", radius=-1)


async def test_rank_gives_one_runners_place_score_and_position(boards: Leaderboards) -> None:
    entries = _distances(30)
    await _submit_all(boards, entries, HIGHER)
    expected = {e.runner_id: e for e in _oracle(entries, HIGHER)}

    for runner_id in ("runner-000", "runner-013", "runner-029"):
        assert await boards.rank(BOARD, runner_id) == expected[runner_id]
    assert await boards.rank(BOARD, "runner-999") is None


async def test_around_shows_the_neighbours_and_is_clipped_at_both_ends(
    boards: Leaderboards,
) -> None:
    entries = _distances(20)
    await _submit_all(boards, entries, HIGHER)
    expected = _oracle(entries, HIGHER)
    by_rank = {e.rank: e.runner_id for e in expected}

    assert await boards.around(BOARD, by_rank[10], radius=2) == expected[7:12]
    assert await boards.around(BOARD, by_rank[1], radius=3) == expected[:4]
    assert await boards.around(BOARD, by_rank[2], radius=3) == expected[:5]
    assert await boards.around(BOARD, by_rank[20], radius=3) == expected[16:]
    assert await boards.around(BOARD, by_rank[5], radius=0) == [expected[4]]
    assert await boards.around(BOARD, by_rank[5], radius=50) == expected
    assert await boards.around(BOARD, "runner-999", radius=2) == []


async def test_count_is_per_board(boards: Leaderboards) -> None:
    await _submit_all(boards, _distances(12), HIGHER)
    await _submit_all(boards, _distances(3), HIGHER, board="club:c7")

    assert await boards.count(BOARD) == 12
    assert await boards.count("club:c7") == 3


async def test_equal_scores_rank_by_who_reached_them_first_then_by_runner_id(
    boards: Leaderboards,
) -> None:
    await boards.submit(BOARD, "late", 5000.0, 40, direction=HIGHER)
    await boards.submit(BOARD, "early", 5000.0, 12, direction=HIGHER)
    await boards.submit(BOARD, "b-same", 5000.0, 20, direction=HIGHER)
    await boards.submit(BOARD, "a-same", 5000.0, 20, direction=HIGHER)
    await boards.submit(BOARD, "leader", 5000.5, 99, direction=HIGHER)

    top = await boards.top(BOARD)

    assert [e.runner_id for e in top] == ["leader", "early", "a-same", "b-same", "late"]
    assert [e.rank for e in top] == [1, 2, 3, 4, 5]
    rank = await boards.rank(BOARD, "b-same")
    assert rank is not None and rank.rank == 4


async def test_a_rebuild_in_another_order_gives_the_same_board(boards: Leaderboards) -> None:
    # Few distinct scores and positions, so most entries tie on score and many on position.
    rng = random.Random(7)
    entries = [Entry(f"r{i}", rng.choice([10.0, 20.0, 30.0]), rng.randint(1, 6)) for i in range(60)]
    await _submit_all(boards, entries, HIGHER)
    live = await boards.top(BOARD, limit=100)
    ranks = [await boards.rank(BOARD, f"r{i}") for i in range(60)]

    await boards.clear(BOARD)
    assert await boards.count(BOARD) == 0
    rebuilt = entries[:]
    rng.shuffle(rebuilt)
    await boards.submit_many(BOARD, rebuilt, direction=HIGHER)

    assert await boards.top(BOARD, limit=100) == live == _oracle(entries, HIGHER)
    assert [await boards.rank(BOARD, f"r{i}") for i in range(60)] == ranks


async def test_a_best_time_board_puts_the_lowest_time_first(boards: Leaderboards) -> None:
    times = [Entry("slow", 1804.2, 1), Entry("fast", 1499.9, 2), Entry("mid", 1600.0, 3)]
    times.append(Entry("mid-later", 1600.0, 8))
    await _submit_all(boards, times, LOWER, board="best-time:5k")

    top = await boards.top("best-time:5k")

    assert [e.runner_id for e in top] == ["fast", "mid", "mid-later", "slow"]
    assert top == _oracle(times, LOWER)
    assert await boards.rank("best-time:5k", "slow") == BoardEntry(4, "slow", 1804.2, 1)
    assert await boards.around("best-time:5k", "fast", radius=1) == top[:2]


async def test_resubmitting_replaces_the_runners_score_and_replaying_it_is_harmless(
    boards: Leaderboards,
) -> None:
    await _submit_all(boards, [Entry("a", 100.0, 1), Entry("b", 200.0, 2)], HIGHER)

    await boards.submit(BOARD, "a", 300.0, 3, direction=HIGHER)
    assert [e.runner_id for e in await boards.top(BOARD)] == ["a", "b"]
    await boards.submit(BOARD, "a", 50.0, 4, direction=HIGHER)  # absolute: may go down too
    await boards.submit(BOARD, "a", 50.0, 4, direction=HIGHER)  # a projection replay

    assert await boards.top(BOARD) == [
        BoardEntry(1, "b", 200.0, 2),
        BoardEntry(2, "a", 50.0, 4),
    ]
    assert await boards.count(BOARD) == 2


async def test_submit_many_equals_one_submit_after_another(boards: Leaderboards) -> None:
    await boards.submit_many(
        BOARD,
        [Entry("a", 1.0, 1), Entry("b", 2.0, 2), Entry("a", 3.0, 3), Entry("c", 0.5, 4)],
        direction=HIGHER,
    )
    await boards.submit_many(BOARD, [], direction=HIGHER)

    assert await boards.top(BOARD) == [
        BoardEntry(1, "a", 3.0, 3),
        BoardEntry(2, "b", 2.0, 2),
        BoardEntry(3, "c", 0.5, 4),
    ]


async def test_remove_takes_the_runner_off_and_closes_the_gap(boards: Leaderboards) -> None:
    entries = _distances(5)
    await _submit_all(boards, entries, HIGHER)
    expected = _oracle(entries, HIGHER)
    gone = expected[1].runner_id

    await boards.remove(BOARD, gone)
    await boards.remove(BOARD, gone)  # already gone: no-op
    await boards.remove(BOARD, "never-there")

    assert await boards.rank(BOARD, gone) is None
    assert await boards.count(BOARD) == 4
    remaining = _oracle([e for e in entries if e.runner_id != gone], HIGHER)
    assert await boards.top(BOARD) == remaining
    assert await boards.rank(BOARD, expected[2].runner_id) == remaining[1]


async def test_clear_empties_one_board_and_clear_all_every_board(boards: Leaderboards) -> None:
    await _submit_all(boards, _distances(4), HIGHER)
    await _submit_all(boards, _distances(3), HIGHER, board="xp:all")

    await boards.clear(BOARD)
    assert await boards.count(BOARD) == 0
    assert await boards.count("xp:all") == 3

    await boards.clear_all()
    assert await boards.count("xp:all") == 0
    assert await boards.top("xp:all") == []


async def test_scores_come_back_exactly_and_order_exactly(boards: Leaderboards) -> None:
    scores = [0.1 + 0.2, 0.3, 1e-300, 5e-324, -1e-300, 0.0, -0.0, 2.0**53 + 2, 1.7e308, -2.5]
    entries = [Entry(f"r{i}", s, 1000 + i) for i, s in enumerate(scores)]
    entries.append(Entry("huge-position", 0.3, 2**63 - 1))
    for direction in Direction:
        board = f"exact:{direction}"
        await _submit_all(boards, entries, direction, board=board)
        assert await boards.top(board, limit=20) == _oracle(entries, direction)


async def test_a_score_that_is_not_a_finite_number_is_refused(boards: Leaderboards) -> None:
    with pytest.raises(ValueError, match="finite"):
        await boards.submit(BOARD, "a", float("nan"), 1, direction=HIGHER)
    with pytest.raises(ValueError, match="reached_at"):
        await boards.submit(BOARD, "a", 1.0, -1, direction=HIGHER)
    assert await boards.count(BOARD) == 0


async def test_a_large_board_with_many_ties_matches_the_reference_ranking(
    boards: Leaderboards,
) -> None:
    rng = random.Random(2026)
    for direction in Direction:
        board = f"weekly:2026-W48:{direction}"
        entries = [
            Entry(
                uuid.UUID(int=rng.getrandbits(128)).hex,
                rng.randint(0, 40) * 0.5,
                rng.randint(1, 50),
            )
            for _ in range(400)
        ]
        await boards.submit_many(board, entries, direction=direction)
        expected = _oracle(entries, direction)

        assert await boards.count(board) == 400
        assert await boards.top(board, limit=50, offset=100) == expected[100:150]
        for e in rng.sample(expected, 15):
            assert await boards.rank(board, e.runner_id) == e
            assert (
                await boards.around(board, e.runner_id, radius=3)
                == expected[max(0, e.rank - 4) : e.rank + 3]
            )


async def test_a_page_is_the_top_and_the_total_read_together(boards: Leaderboards) -> None:
    entries = _distances(12)
    await _submit_all(boards, entries, HIGHER)
    expected = _oracle(entries, HIGHER)

    page = await boards.page(BOARD, limit=5, offset=5)

    assert page is not None
    assert page.entries == expected[5:10] and page.total == 12
    empty = await boards.page("weekly:2026-W48", limit=0)
    assert empty is not None and (empty.total, empty.entries) == (0, [])
    with pytest.raises(ValueError, match="offset"):
        await boards.page(BOARD, limit=10, offset=-1)


async def test_a_backend_without_versions_always_reads_the_page(
    sql_boards: SqlLeaderboards,
) -> None:
    await _submit_all(sql_boards, _distances(3), HIGHER)
    page = await sql_boards.page(BOARD, unless="anything")

    assert not sql_boards.shared_versions
    assert page is not None and page.version is None and page.total == 3


def _redis_boards(redis_url: str, prefix: str) -> RedisLeaderboards:
    return RedisLeaderboards(Redis.from_url(redis_url), prefix=prefix)


async def _version(boards: RedisLeaderboards, board: str = BOARD) -> str:
    page = await boards.page(board, limit=1)
    assert page is not None and page.version is not None
    return page.version


async def test_the_redis_version_moves_with_every_change_and_only_then(redis_url: str) -> None:
    boards = _redis_boards(redis_url, f"test:{uuid.uuid4().hex}")
    try:
        assert boards.shared_versions
        await boards.submit(BOARD, "a", 10.0, 1, direction=HIGHER)
        v1 = await _version(boards)
        assert await boards.page(BOARD, limit=1, unless=v1) is None  # the caller's copy is current

        await boards.submit(BOARD, "a", 10.0, 1, direction=HIGHER)  # a replayed write: no change
        assert await _version(boards) == v1
        await boards.remove(BOARD, "nobody")
        assert await _version(boards) == v1

        seen = {v1}
        for change in (
            boards.submit(BOARD, "b", 20.0, 2, direction=HIGHER),
            boards.submit(BOARD, "a", 30.0, 3, direction=HIGHER),
            boards.submit_many(BOARD, [Entry("c", 5.0, 4)], direction=HIGHER),
            boards.remove(BOARD, "b"),
        ):
            await change
            version = await _version(boards)
            assert version not in seen
            seen.add(version)
            stale = await boards.page(BOARD, limit=10, unless=v1)
            assert stale is not None and stale.version == version
            assert stale.entries == await boards.top(BOARD, limit=10)

        await boards.submit("xp:all", "z", 1.0, 9, direction=HIGHER)  # another board: no move
        assert await _version(boards) == version
    finally:
        await boards.clear_all()
        await boards.redis.aclose()


async def test_a_cleared_or_lost_redis_board_never_gives_an_old_version_back(
    redis_url: str,
) -> None:
    """Versions restart from a random value, so the same count of writes after a clear (or a
    Redis that lost its data) does not land on a version a cache still holds."""
    boards = _redis_boards(redis_url, f"test:{uuid.uuid4().hex}")
    try:
        await boards.submit(BOARD, "a", 10.0, 1, direction=HIGHER)
        before = await _version(boards)
        await boards.clear(BOARD)
        after_clear = await boards.page(BOARD, unless=before)
        assert after_clear is not None and after_clear.entries == []
        await boards.submit(BOARD, "b", 99.0, 1, direction=HIGHER)
        rewritten = await boards.page(BOARD, unless=before)
        assert rewritten is not None and rewritten.version != before
        assert [e.runner_id for e in rewritten.entries] == ["b"]

        await boards.clear_all()
        await boards.submit(BOARD, "a", 10.0, 1, direction=HIGHER)
        assert await boards.page(BOARD, unless=before) is not None
    finally:
        await boards.clear_all()
        await boards.redis.aclose()


async def test_two_processes_on_one_redis_see_each_others_versions(redis_url: str) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    mine, theirs = _redis_boards(redis_url, prefix), _redis_boards(redis_url, prefix)
    try:
        await mine.submit(BOARD, "a", 10.0, 1, direction=HIGHER)
        held = await mine.page(BOARD)
        assert held is not None and held.version is not None

        await theirs.submit(BOARD, "b", 20.0, 2, direction=HIGHER)

        fresh = await mine.page(BOARD, unless=held.version)
        assert fresh is not None
        assert [e.runner_id for e in fresh.entries] == ["b", "a"] and fresh.total == 2
    finally:
        await mine.clear_all()
        await mine.redis.aclose()
        await theirs.redis.aclose()


async def test_redis_pages_carry_runner_ids_of_any_bytes(redis_url: str) -> None:
    """The page comes back as `<len>:<member>` items: ids with colons, digits and non-ASCII
    letters must not confuse the split."""
    boards = _redis_boards(redis_url, f"test:{uuid.uuid4().hex}")
    ids = ["12:34", ":", "9", "ümlaut:ñ", "a" * 200, "x\ny"]
    try:
        entries = [Entry(r, float(i), i + 1) for i, r in enumerate(ids)]
        await boards.submit_many(BOARD, entries, direction=LOWER)
        page = await boards.page(BOARD, limit=10, offset=1)
        assert page is not None
        assert page.entries == _oracle(entries, LOWER)[1:]
    finally:
        await boards.clear_all()
        await boards.redis.aclose()


async def test_a_projection_writes_inside_its_own_transaction(
    sql_boards: SqlLeaderboards,
) -> None:
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback):
        async with sql_boards.engine.connect() as raw:
            conn = await writer(raw)
            async with conn.begin():
                await sql_boards.submit_in(conn, BOARD, "a", 10.0, 1, direction=HIGHER)
                assert (await sql_boards.rank_in(conn, BOARD, "a")) == BoardEntry(1, "a", 10.0, 1)
                raise Rollback
    assert await sql_boards.count(BOARD) == 0

    async with sql_boards.engine.connect() as raw:
        conn = await writer(raw)
        async with conn.begin():
            await sql_boards.submit_many_in(conn, BOARD, [Entry("b", 2.0, 2)], direction=LOWER)
            await sql_boards.remove_in(conn, BOARD, "nobody")
    async with sql_boards.engine.connect() as conn:
        rows = (await conn.execute(select(BOARD_ENTRIES.c.runner_id))).scalars().all()
    assert rows == ["b"]


# -- backend selection and the Redis encoding (no server needed) ---------------------------


def test_the_backend_follows_the_redis_url(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    client = Redis.from_url("redis://127.0.0.1:6379/15")
    embedded = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", redis_url=None)
    scaled = Settings(database_url=embedded.database_url, redis_url="redis://127.0.0.1:6379/0")

    assert isinstance(leaderboards_from_settings(embedded, engine, client), SqlLeaderboards)
    assert isinstance(leaderboards_from_settings(scaled, engine, client), RedisLeaderboards)
    with pytest.raises(ValueError, match="REDIS_URL"):
        leaderboards_from_settings(scaled, engine, None)


_finite = st.floats(allow_nan=False, allow_infinity=False)
_position = st.integers(0, 2**63 - 1)
_runner = st.text(min_size=1, max_size=8).filter(lambda s: "\x00" not in s)


@given(_finite, _position, _runner, _finite, _position, _runner, st.sampled_from(list(Direction)))
def test_the_redis_member_bytes_order_like_the_ranking_sort_key(
    s1: float, p1: int, r1: str, s2: float, p2: int, r2: str, direction: Direction
) -> None:
    m1 = encode_member(s1, p1, r1, direction).encode()
    m2 = encode_member(s2, p2, r2, direction).encode()
    k1, k2 = sort_key(s1, p1, r1, direction), sort_key(s2, p2, r2, direction)
    assert (m1 < m2) == (k1 < k2)
    assert decode_member(1, m1) == BoardEntry(1, r1, s1 + 0.0, p1)
