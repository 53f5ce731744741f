"""The command path's state cache, on SQLite and PostgreSQL: it never hides another writer's
events, a conflict drops the entry, a rewritten log is noticed, and its size is bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from game.errors import InvalidCommand
from game.events import event
from server import commands
from server.commands import CachedState, StateCache, execute, load_state, state_cache
from server.store.db import create_engine
from server.store.event_store import ConcurrencyError, EventStore, NewEvent

NOW = datetime(2026, 5, 1, tzinfo=UTC)

#: PostgreSQL-only checks: the `store` fixture's `database_url` narrowed to the real server.
POSTGRES_ONLY = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@event("TestTallied")
@dataclass(frozen=True, slots=True)
class Tallied:
    by: int


@dataclass(frozen=True, slots=True)
class Tally:
    by: int


class TallyDecider:
    """A counter: the state is the sum of the tallies."""

    @staticmethod
    def initial_state() -> int:
        return 0

    @staticmethod
    def decide(state: int, command: Tally, now: datetime) -> list[Any]:
        if state + command.by < 0:
            raise InvalidCommand("a tally never goes below zero", code="below_zero")
        return [Tallied(command.by)] if command.by else []

    @staticmethod
    def evolve(state: int, evt: Tallied) -> int:
        return state + evt.by


def tallied(by: int) -> NewEvent:
    return NewEvent.of(Tallied(by))


@pytest.fixture
async def other(database_url: str) -> AsyncIterator[EventStore]:
    """A second store on the same database: another server process, with its own cache."""
    engine = create_engine(database_url)
    store = EventStore(engine)
    try:
        yield store
    finally:
        store.close()
        await engine.dispose()


async def test_a_command_sees_what_another_process_appended_after_it_cached_the_stream(
    store: EventStore, other: EventStore
) -> None:
    await execute(store, "tally-1", TallyDecider, Tally(1), now=NOW)
    await execute(store, "tally-1", TallyDecider, Tally(2), now=NOW)
    assert state_cache(store).get("tally-1", TallyDecider) is not None

    await other.append("tally-1", 2, [tallied(10), tallied(100)])

    assert await load_state(store, "tally-1", TallyDecider) == (113, 4)
    outcome = await execute(store, "tally-1", TallyDecider, Tally(1000), now=NOW)
    assert outcome.state == 1113
    assert outcome.result is not None and outcome.result.last_version == 5
    assert [e.data["by"] for e in await store.load("tally-1")] == [1, 2, 10, 100, 1000]
    assert await load_state(other, "tally-1", TallyDecider) == (1113, 5)


async def test_a_command_on_a_cached_state_another_process_moved_on_is_decided_again(
    store: EventStore, other: EventStore
) -> None:
    await execute(store, "tally-6", TallyDecider, Tally(1), now=NOW)
    await other.append("tally-6", 1, [tallied(10)])  # this process's entry is now behind
    seen: list[int] = []

    def command(state: int) -> Tally:
        seen.append(state)
        return Tally(100)

    outcome = await execute(store, "tally-6", TallyDecider, command, now=NOW)
    assert seen == [1, 11]  # decided on the cached state, refused at its version, decided again
    assert outcome.state == 111
    assert [e.data["by"] for e in await store.load("tally-6")] == [1, 10, 100]
    assert await load_state(other, "tally-6", TallyDecider) == (111, 3)


async def test_a_refusal_on_a_cached_state_is_confirmed_on_the_fresh_stream(
    store: EventStore, other: EventStore
) -> None:
    await execute(store, "tally-7", TallyDecider, Tally(1), now=NOW)
    await other.append("tally-7", 1, [tallied(10)])
    # Refused on the cached state (1 - 5 < 0) but fine on the real one (11 - 5).
    outcome = await execute(store, "tally-7", TallyDecider, Tally(-5), now=NOW)
    assert outcome.state == 6
    # Refused on both: the refusal is answered.
    with pytest.raises(InvalidCommand):
        await execute(store, "tally-7", TallyDecider, Tally(-7), now=NOW)
    await other.append("tally-7", 3, [tallied(-6)])
    with pytest.raises(InvalidCommand):
        await execute(store, "tally-7", TallyDecider, Tally(-1), now=NOW)


async def test_a_no_op_on_a_cached_state_answers_with_the_fresh_state(
    store: EventStore, other: EventStore
) -> None:
    await execute(store, "tally-8", TallyDecider, Tally(1), now=NOW)
    await other.append("tally-8", 1, [tallied(10)])
    outcome = await execute(store, "tally-8", TallyDecider, Tally(0), now=NOW)
    assert (outcome.state, outcome.events, outcome.result) == (11, [], None)


async def test_a_conflict_drops_the_entry_and_the_retry_decides_on_the_fresh_stream(
    store: EventStore, other: EventStore
) -> None:
    await execute(store, "tally-2", TallyDecider, Tally(1), now=NOW)
    seen: list[int] = []

    def command(state: int) -> Tally:
        seen.append(state)
        return Tally(1)

    # Another process appends between this process's load and its append (the first attempt's
    # decision is made on state 1 and must not land).
    original_load = commands._load

    async def load_then_race(s: EventStore, stream_id: str, decider: Any) -> CachedState:
        entry = await original_load(s, stream_id, decider)
        if not seen:
            await other.append(stream_id, entry.version, [tallied(50)])
        return entry

    state_cache(store).clear()  # the first attempt loads (the race is injected there)
    commands._load = load_then_race  # type: ignore[assignment]
    try:
        outcome = await execute(store, "tally-2", TallyDecider, command, now=NOW)
    finally:
        commands._load = original_load  # type: ignore[assignment]
    assert seen == [1, 51]
    assert outcome.state == 52
    assert [e.data["by"] for e in await store.load("tally-2")] == [1, 50, 1]
    assert await load_state(store, "tally-2", TallyDecider) == (52, 3)
    cached = state_cache(store).get("tally-2", TallyDecider)
    assert cached is not None and (cached.version, cached.state) == (3, 52)


async def test_a_conflict_that_is_not_retried_leaves_no_entry_behind(
    store: EventStore, other: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await execute(store, "tally-3", TallyDecider, Tally(1), now=NOW)
    monkeypatch.setattr(commands, "MAX_ATTEMPTS", 1)
    original_load = commands._load

    async def load_then_race(s: EventStore, stream_id: str, decider: Any) -> CachedState:
        entry = await original_load(s, stream_id, decider)
        await other.append(stream_id, entry.version, [tallied(50)])
        return entry

    monkeypatch.setattr(commands, "_load", load_then_race)
    state_cache(store).clear()
    with pytest.raises(ConcurrencyError):
        await execute(store, "tally-3", TallyDecider, Tally(1), now=NOW)
    assert state_cache(store).get("tally-3", TallyDecider) is None


async def test_a_log_rewritten_under_the_cache_is_read_whole_again(store: EventStore) -> None:
    await execute(store, "tally-4", TallyDecider, Tally(1), now=NOW)
    await execute(store, "tally-4", TallyDecider, Tally(2), now=NOW)
    # A restore from an older backup, then other events at the same versions: the cached
    # version's event is no longer the one the cache saw.
    async with store.engine.begin() as conn:
        await conn.execute(text("DELETE FROM events WHERE stream_id = 'tally-4'"))
    await store.append("tally-4", 0, [tallied(7), tallied(8), tallied(9)])
    assert await load_state(store, "tally-4", TallyDecider) == (24, 3)

    async with store.engine.begin() as conn:
        await conn.execute(text("DELETE FROM events WHERE stream_id = 'tally-4'"))
    await store.append("tally-4", 0, [tallied(5)])  # shorter than the cached stream
    assert await load_state(store, "tally-4", TallyDecider) == (5, 1)


async def test_the_cache_keeps_the_most_recently_used_streams_up_to_its_size(
    store: EventStore,
) -> None:
    cache = state_cache(store)
    cache.maxsize = 3
    for i in range(6):
        if i == 5:
            await load_state(store, "tally-lru-2", TallyDecider)  # used again: kept
        await store.append(f"tally-lru-{i}", 0, [tallied(i)])
        await execute(store, f"tally-lru-{i}", TallyDecider, Tally(1), now=NOW)
    assert len(cache) == 3
    kept = [i for i in range(6) if cache.get(f"tally-lru-{i}", TallyDecider) is not None]
    assert kept == [2, 4, 5]
    # an evicted stream is simply read whole again
    assert await load_state(store, "tally-lru-0", TallyDecider) == (1, 2)
    assert await load_state(store, "tally-lru-1", TallyDecider) == (2, 2)


async def test_a_duplicate_idempotent_command_answers_without_moving_the_cache(
    store: EventStore,
) -> None:
    first = await execute(store, "tally-5", TallyDecider, Tally(3), idempotency_key="k5", now=NOW)
    again = await execute(store, "tally-5", TallyDecider, Tally(3), idempotency_key="k5", now=NOW)
    assert first.result is not None and again.result is not None
    assert again.result.duplicate and again.result.last_version == first.result.last_version
    assert await load_state(store, "tally-5", TallyDecider) == (3, 1)


def test_an_entry_never_goes_back_to_an_older_version() -> None:
    cache = StateCache(maxsize=4)
    cache.put("s", TallyDecider, CachedState(5, 50, NOW, "five"))
    cache.put("s", TallyDecider, CachedState(3, 30, NOW, "three"))
    cache.put("empty", TallyDecider, CachedState(0, 0, None, "nothing"))
    assert cache.get("s", TallyDecider) == CachedState(5, 50, NOW, "five")
    assert cache.get("empty", TallyDecider) is None
    assert len(StateCache(maxsize=0)) == 0


async def test_fast_read_paths_return_what_sqlalchemy_reads(store: EventStore) -> None:
    """`load` and `read_all` run on sqlite3 reader threads or the asyncpg driver; they must give
    the very values the SQLAlchemy path (`read_all_in`, used by projections) gives."""
    await store.append("r-1", 0, [NewEvent("A", {"x": [1, 2.5, None], "s": "é"})], meta={"a": 1})
    await store.append("r-2", 0, [NewEvent("B", {"n": 1}, 2), NewEvent("C", {})])
    await store.append("r-1", 1, [NewEvent("D", {"deep": {"k": True}})])
    async with store.engine.connect() as conn:
        expected = await store.read_all_in(conn, 0, 100)
    assert await store.read_all(0, 100) == expected
    assert await store.load("r-1") == [e for e in expected if e.stream_id == "r-1"]
    assert await store.load("r-1", 1) == [e for e in expected if e.stream_id == "r-1"][1:]
    assert all(e.recorded_at.tzinfo is not None for e in expected)
    assert [e.schema_version for e in expected] == [1, 2, 1, 1]


async def _kill_other_backends(store: EventStore) -> None:
    """Close every other server connection to this test database, as a server restart would."""
    killer = create_engine(str(store.engine.url.render_as_string(hide_password=False)))
    try:
        async with killer.connect() as conn:
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            for _ in range(200):
                left = await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                if left.scalar_one() == 0:
                    return
                await asyncio.sleep(0.01)
    finally:
        await killer.dispose()


@POSTGRES_ONLY
async def test_pooled_connections_the_server_closed_are_replaced_without_an_error(
    store: EventStore,
) -> None:
    """PostgreSQL appends and loads skip the pool's ping (their first statement is the ping):
    a dead pooled connection must still never surface as an error."""
    await store.append("p-1", 0, [tallied(1)])
    await _kill_other_backends(store)
    await store.append("p-1", 1, [tallied(2)])
    await _kill_other_backends(store)
    assert [e.data["by"] for e in await store.load("p-1")] == [1, 2]
    await _kill_other_backends(store)
    assert await load_state(store, "p-1", TallyDecider) == (3, 2)


@POSTGRES_ONLY
async def test_a_refused_append_leaves_no_transaction_open_on_its_connection(
    store: EventStore,
) -> None:
    await store.append("p-2", 0, [tallied(1)])
    for _ in range(3):
        with pytest.raises(ConcurrencyError):
            await store.append("p-2", 0, [tallied(2)])
    async with store.engine.connect() as conn:
        open_ = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'"
            )
        )
        assert open_.scalar_one() == 0
    # and the advisory lock is free: another append goes through at once
    await store.append("p-2", 1, [tallied(3)])


async def test_the_entry_an_append_leaves_names_the_stored_event_exactly(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an append the entry carries the new event's position and time as stored, so the
    next read checks it with one short query instead of reading the stream whole."""
    await store.append("tally-9", 0, [tallied(1)])
    await execute(store, "tally-9", TallyDecider, Tally(2), now=NOW)
    await execute(store, "tally-9", TallyDecider, Tally(3), now=NOW)
    reads: list[int] = []
    original = store.load

    async def spy(stream_id: str, after_version: int = 0) -> list[Any]:
        reads.append(after_version)
        return await original(stream_id, after_version)

    monkeypatch.setattr(store, "load", spy)
    assert await load_state(store, "tally-9", TallyDecider) == (6, 3)
    assert reads == [2]
