"""Redis boards lost (Redis restarted empty) are noticed and rebuilt from the log, on SQLite
and PostgreSQL, with the real Redis: the same boards as before, the read models untouched."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from server.boards.keeper import BoardsKeeper
from server.boards.redis import RedisLeaderboards
from server.store.event_store import EventStore
from server.store.progress import CoreProjection
from server.store.projections import ProjectionRunner
from tests.store.test_rebuild import fresh_projection, random_step, scenario, snapshot

pytestmark = pytest.mark.redis


@pytest.fixture
async def boards(redis_url: str) -> AsyncIterator[RedisLeaderboards]:
    client = Redis.from_url(redis_url)
    boards = RedisLeaderboards(client, prefix=f"test:keeper:{uuid.uuid4().hex}")
    try:
        yield boards
    finally:
        await lose_everything(boards)
        await client.aclose()


async def lose_everything(boards: RedisLeaderboards) -> None:
    """What a Redis restart without persistence does to this test's keys."""
    for pattern in (f"{boards.prefix}:*", f"{boards.prefix}-meta:*"):
        keys = [k async for k in boards.redis.scan_iter(match=pattern, count=1000)]
        if keys:
            await boards.redis.delete(*keys)


def keeper(boards: RedisLeaderboards, store: EventStore) -> BoardsKeeper:
    return BoardsKeeper(boards, store, [CoreProjection(boards)])


async def test_lost_redis_boards_are_rebuilt_as_they_were_and_the_read_models_stay(
    store: EventStore, boards: RedisLeaderboards
) -> None:
    runner = ProjectionRunner(store, [await fresh_projection(store, boards)], batch_size=7)
    w = await scenario(store, runner, 5)
    first = keeper(boards, store)
    assert await first.check_once()  # no sentinel yet: the first check builds them once
    assert not await first.check_once()  # and then leaves them alone
    before = await snapshot(store, boards)
    assert len(before[1]) >= 5 and sum(len(v) for v in before[1].values()) >= 20

    await lose_everything(boards)
    assert (await snapshot(store, boards))[1] == {}
    assert await first.check_once()
    assert await snapshot(store, boards) == before  # boards rebuilt, read-model rows unchanged
    assert first.rebuilds == 2

    # live operation continues on top of the rebuilt boards
    for _ in range(15):
        await random_step(w)
    await runner.run_once()
    live = await snapshot(store, boards)
    assert live != before
    await lose_everything(boards)
    assert await first.check_once()
    assert await snapshot(store, boards) == live


async def test_one_process_rebuilds_while_the_others_watch(
    store: EventStore, boards: RedisLeaderboards
) -> None:
    runner = ProjectionRunner(store, [await fresh_projection(store, boards)])
    await scenario(store, runner, 7)
    expected = await snapshot(store, boards)
    await lose_everything(boards)
    keepers = [keeper(boards, store) for _ in range(3)]
    await asyncio.gather(*(k.check_once() for k in keepers))
    assert sum(k.rebuilds for k in keepers) == 1
    assert await snapshot(store, boards) == expected
