"""Event store contract: the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from server.store.event_store import (
    ConcurrencyError,
    EventStore,
    IdempotencyMismatch,
    NewEvent,
)


def ev(n: int, kind: str = "Counted") -> NewEvent:
    return NewEvent(kind, {"n": n})


async def test_appends_get_consecutive_versions_and_load_returns_them(store: EventStore) -> None:
    r1 = await store.append("run-1", 0, [ev(1), ev(2)], meta={"actor": "u1"})
    r2 = await store.append("run-1", 2, [ev(3)])
    assert (r1.first_version, r1.last_version) == (1, 2)
    assert (r2.first_version, r2.last_version) == (3, 3)
    loaded = await store.load("run-1")
    assert [e.version for e in loaded] == [1, 2, 3]
    assert [e.data["n"] for e in loaded] == [1, 2, 3]
    assert loaded[0].meta == {"actor": "u1"}
    assert [e.version for e in await store.load("run-1", after_version=2)] == [3]
    assert await store.version("run-1") == 3
    assert await store.version("nobody") == 0


async def test_append_at_a_stale_version_is_a_conflict_and_writes_nothing(
    store: EventStore,
) -> None:
    await store.append("s", 0, [ev(1)])
    with pytest.raises(ConcurrencyError) as info:
        await store.append("s", 0, [ev(2), ev(3)])
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert info.value.code == "version_conflict"
    assert [e.data["n"] for e in await store.load("s")] == [1]


async def test_expected_version_none_appends_at_any_version(store: EventStore) -> None:
    await store.append("s", None, [ev(1)])
    result = await store.append("s", None, [ev(2)])
    assert result.last_version == 2


async def test_empty_append_is_refused(store: EventStore) -> None:
    with pytest.raises(ValueError):
        await store.append("s", 0, [])


async def test_sixteen_concurrent_writers_at_one_version_one_wins(store: EventStore) -> None:
    await store.append("race", 0, [ev(0)])

    async def attempt(i: int) -> str:
        try:
            await store.append("race", 1, [ev(i)])
            return "ok"
        except ConcurrencyError:
            return "conflict"

    outcomes = await asyncio.gather(*(attempt(i) for i in range(16)))
    assert outcomes.count("ok") == 1
    assert outcomes.count("conflict") == 15
    assert [e.version for e in await store.load("race")] == [1, 2]


async def test_concurrent_writers_that_retry_leave_no_gaps_or_duplicates(store: EventStore) -> None:
    async def writer(i: int) -> None:
        for _ in range(50):  # bounded retries
            version = await store.version("counter")
            try:
                await store.append("counter", version, [ev(i)])
                return
            except ConcurrencyError:
                await asyncio.sleep(0)
        raise AssertionError("writer never won")

    await asyncio.gather(*(writer(i) for i in range(16)))
    loaded = await store.load("counter")
    assert [e.version for e in loaded] == list(range(1, 17))
    assert sorted(e.data["n"] for e in loaded) == list(range(16))
    positions = [e.position for e in await store.read_all(0, 100)]
    assert positions == sorted(set(positions))


async def test_a_retried_command_with_the_same_key_returns_the_first_result(
    store: EventStore,
) -> None:
    first = await store.append("run-9", 0, [ev(1), ev(2)], idempotency_key="k-1")
    again = await store.append("run-9", 0, [ev(1), ev(2)], idempotency_key="k-1")
    assert not first.duplicate and again.duplicate
    assert (again.first_version, again.last_version, again.last_position) == (
        first.first_version,
        first.last_version,
        first.last_position,
    )
    assert len(await store.load("run-9")) == 2


async def test_concurrent_retries_with_one_key_write_once(store: EventStore) -> None:
    results = await asyncio.gather(
        *(store.append("run-c", None, [ev(1)], idempotency_key="same") for _ in range(8)),
        return_exceptions=True,
    )
    assert all(not isinstance(r, BaseException) for r in results), results
    assert sum(1 for r in results if not r.duplicate) == 1  # type: ignore[union-attr]
    assert len(await store.load("run-c")) == 1


async def test_an_idempotency_key_reused_on_another_stream_is_refused(store: EventStore) -> None:
    await store.append("a", 0, [ev(1)], idempotency_key="k")
    with pytest.raises(IdempotencyMismatch):
        await store.append("b", 0, [ev(1)], idempotency_key="k")
    assert await store.version("b") == 0


async def test_read_all_pages_through_the_log_in_commit_order(store: EventStore) -> None:
    for i in range(5):
        await store.append(f"s{i % 2}", None, [ev(i)])
    page1 = await store.read_all(0, 3)
    page2 = await store.read_all(page1[-1].position, 3)
    assert [e.data["n"] for e in page1 + page2] == [0, 1, 2, 3, 4]
    assert await store.head_position() == page2[-1].position
    assert await store.read_all(page2[-1].position) == []
