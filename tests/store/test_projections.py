"""Projections: commit order, stored checkpoints, restart without loss or repeats, rebuild."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.event_store import EventStore, NewEvent, RecordedEvent
from server.store.projections import ProjectionRunner, checkpoint

_meta = MetaData()
SEEN = Table(
    "test_seen_events",
    _meta,
    Column("position", BigInteger, primary_key=True),  # a repeat would violate the key
    Column("stream_id", String(200)),
    Column("n", Integer),
)


class SeenProjection:
    """Records every event it is handed; fails on demand to prove a failed batch rolls back."""

    name = "test_seen"

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.calls = 0

    async def apply(self, conn: AsyncConnection, events: Sequence[RecordedEvent]) -> None:
        self.calls += 1
        rows = [
            {"position": e.position, "stream_id": e.stream_id, "n": e.data["n"]} for e in events
        ]
        await conn.execute(insert(SEEN), rows)
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("projection crashed mid-batch")

    async def reset(self, conn: AsyncConnection) -> None:
        await conn.execute(delete(SEEN))


async def _seen(store: EventStore) -> list[int]:
    async with store.engine.connect() as conn:
        return [r.n for r in await conn.execute(select(SEEN).order_by(SEEN.c.position))]


async def _prepare(store: EventStore) -> None:
    async with store.engine.begin() as conn:
        await conn.run_sync(lambda c: _meta.drop_all(c, checkfirst=True))
        await conn.run_sync(_meta.create_all)


async def test_a_restarted_subscriber_misses_nothing_and_sees_nothing_twice(
    store: EventStore,
) -> None:
    await _prepare(store)
    for i in range(7):
        await store.append(f"s{i % 3}", None, [NewEvent("Counted", {"n": i})])

    crashing = SeenProjection(fail_after=1)
    runner = ProjectionRunner(store, [crashing], batch_size=3)
    with pytest.raises(RuntimeError):
        await runner.run_once()
    assert await _seen(store) == [0, 1, 2]  # the second batch rolled back with its checkpoint

    for i in range(7, 10):
        await store.append("s9", None, [NewEvent("Counted", {"n": i})])
    restarted = ProjectionRunner(store, [SeenProjection()], batch_size=3)
    assert await restarted.run_once() == 7
    assert await _seen(store) == list(range(10))
    async with store.engine.connect() as conn:
        assert await checkpoint(conn, "test_seen") == await store.head_position()
    assert await restarted.run_once() == 0


async def test_run_forever_follows_new_appends_and_rebuild_reproduces_the_read_model(
    store: EventStore,
) -> None:
    await _prepare(store)
    runner = ProjectionRunner(store, [SeenProjection()], batch_size=2, poll_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run_forever(stop))
    for i in range(5):
        await store.append("live", None, [NewEvent("Counted", {"n": i})])
    for _ in range(100):  # bounded wait for the subscriber
        if len(await _seen(store)) == 5:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    live = await _seen(store)
    assert live == [0, 1, 2, 3, 4]
    assert await runner.rebuild() == 5
    assert await _seen(store) == live
