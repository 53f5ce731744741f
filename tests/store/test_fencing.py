"""Fenced appends (a room owner's lease token): the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import insert, select

from server.store.db import writer
from server.store.event_store import EventStore, NewEvent, StaleFence
from server.store.read_models import RaceFixChunkRow

CHUNKS = RaceFixChunkRow.__table__  # type: ignore[attr-defined]


def ev(n: int) -> NewEvent:
    return NewEvent("Counted", {"n": n})


async def test_a_fenced_append_raises_the_fence_and_later_tokens_may_append(
    store: EventStore,
) -> None:
    assert await store.fence_of("race-1") is None
    await store.append("race-1", 0, [ev(1)], fence=7)
    assert await store.fence_of("race-1") == 7
    await store.append("race-1", 1, [ev(2)], fence=7)  # the same owner again
    await store.append("race-1", 2, [ev(3)], fence=9)  # a later owner
    assert await store.fence_of("race-1") == 9
    assert [e.data["n"] for e in await store.load("race-1")] == [1, 2, 3]


async def test_a_stale_owner_cannot_append_at_a_version_that_passes_the_version_check(
    store: EventStore,
) -> None:
    await store.append("race-1", 0, [ev(1)], fence=7)
    # The new owner (token 8) took over and wrote; the stale owner (7) reloaded the stream in
    # between, so its expected version is current: only the fence stops it.
    await store.append("race-1", 1, [ev(2)], fence=8)
    with pytest.raises(StaleFence) as info:
        await store.append("race-1", 2, [ev(99)], fence=7)
    assert (info.value.token, info.value.held, info.value.code) == (7, 8, "stale_fence")
    with pytest.raises(StaleFence):
        await store.append("race-1", None, [ev(99)], fence=7)
    assert [e.data["n"] for e in await store.load("race-1")] == [1, 2]
    assert await store.fence_of("race-1") == 8


async def test_fences_are_per_stream_and_unfenced_appends_are_not_checked(
    store: EventStore,
) -> None:
    await store.append("race-1", 0, [ev(1)], fence=8)
    await store.append("race-2", 0, [ev(1)], fence=3)  # another room, its own counter
    await store.append("race-1", 1, [ev(2)])  # a registration through the API: no token
    assert await store.fence_of("race-2") == 3
    assert await store.version("race-1") == 2


async def test_a_refused_append_rolls_back_what_its_transaction_wrote(store: EventStore) -> None:
    """The room inserts its fix chunks and appends in one transaction: a refusal keeps neither."""
    await store.append("race-r", 0, [ev(1)], fence=8)
    row = {
        "race_id": "r",
        "runner_id": "a",
        "chunk": 0,
        "first_seq": 1,
        "last_seq": 1,
        "data": b"x",
    }
    with pytest.raises(StaleFence):
        async with store.engine.connect() as raw:
            conn = await writer(raw)
            async with conn.begin():
                await conn.execute(insert(CHUNKS), [row])
                await store.append_in(conn, "race-r", 1, [ev(2)], fence=7)
    async with store.engine.connect() as conn:
        assert (await conn.execute(select(CHUNKS))).all() == []
    assert await store.version("race-r") == 1


async def test_concurrent_owners_only_the_highest_token_keeps_writing(store: EventStore) -> None:
    """Owners 1..6 race to append; afterwards every token below the fence is refused."""

    async def attempt(token: int) -> None:
        for _ in range(20):
            try:
                await store.append("race-c", None, [ev(token)], fence=token)
                return
            except StaleFence:
                return

    await asyncio.gather(*(attempt(t) for t in range(1, 7)))
    top = await store.fence_of("race-c")
    assert top is not None
    stream = [e.data["n"] for e in await store.load("race-c")]
    assert stream == sorted(stream) and stream[-1] == top  # tokens only ever went up
    for token in range(1, top):
        with pytest.raises(StaleFence):
            await store.append("race-c", None, [ev(token)], fence=token)


async def test_raising_the_fence_before_loading_shuts_out_the_previous_owner(
    store: EventStore,
) -> None:
    await store.append("race-1", 0, [ev(1)], fence=7)
    await store.raise_fence("race-1", 8)  # the new owner, before it loads the stream
    with pytest.raises(StaleFence):
        await store.append("race-1", 1, [ev(2)], fence=7)
    with pytest.raises(StaleFence):
        await store.raise_fence("race-1", 7)
    assert await store.version("race-1") == 1
