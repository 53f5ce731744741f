"""A room owner whose lease lapsed cannot append once the next owner wrote (real PostgreSQL and
Redis, two backplanes in one process standing for two server processes)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from redis.asyncio import Redis

from game import races
from server.config import Settings
from server.rooms.backplane import RedisBackplane
from server.rooms.room import Room
from server.store.db import create_engine
from server.store.event_store import EventStore, StaleFence
from server.store.migrate import upgrade
from tests.conftest import PG_ADMIN_URL, in_thread, require_service
from tests.rooms.conftest import SECRET, World

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(60)]

REDIS_URL = "redis://127.0.0.1:6379/12"
PREFIX = f"retrorun-fence-test-{uuid.uuid4().hex[:6]}:rooms"


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def db_url() -> AsyncIterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    name = f"retrorun_fence_{uuid.uuid4().hex[:10]}"
    await _pg(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        await asyncio.to_thread(in_thread, upgrade, url)
        yield url
    finally:
        await _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_stale_room_owner_cannot_append_after_the_new_owner_wrote(db_url: str) -> None:
    world = World(Settings(database_url=db_url, secret_key=SECRET, log_json=False))
    runners = await world.users(2)
    (moderator,) = await world.users(1, "moderator")
    race_id = await world.race(moderator, runners, 200.0, gun=time.time() - 5.0)
    stream = f"race-{race_id}"

    redis = Redis.from_url(REDIS_URL)
    engine = create_engine(db_url)
    store = EventStore(engine)
    old_bp = RedisBackplane(redis, prefix=PREFIX, node="old-owner")
    new_bp = RedisBackplane(redis, prefix=PREFIX, node="new-owner")
    old, new = Room(race_id, store, old_bp), Room(race_id, store, new_bp)
    try:
        await old.open()
        assert old.fence is not None and old_bp.owns(race_id)
        # The old owner stalls past its lease (a long pause, a partition from Redis): the lease
        # lapses in Redis while the old room still runs, and another process takes the room.
        await redis.delete(old_bp.keys(race_id).lease)
        await new.open()
        assert new.fence is not None and new.fence > old.fence
        # fenced at the claim, before the new owner loaded the streams or wrote anything: from
        # here the old owner can append nothing the new one would not see
        assert await store.fence_of(stream) == new.fence
        assert await store.fence_of(new.safety_stream) == new.fence
        await new._commit([races.Pause(moderator)], moderator)  # the new owner writes
        assert await store.fence_of(stream) == new.fence
        version = await store.version(stream)

        # The old owner wakes up and appends. The version check alone would refuse this one,
        # and the room would catch up and append again at the current version; the fence is
        # checked first and refuses it for good.
        with pytest.raises(StaleFence) as info:
            await old._commit([races.Disqualify(moderator, runners[0], "stale")], moderator)
        assert (info.value.token, info.value.held) == (old.fence, new.fence)
        events = await store.load(stream)
        assert len(events) == version and events[-1].type == "RacePaused"

        # The new owner keeps writing.
        await new._commit([races.Resume(moderator)], moderator)
        assert (await store.load(stream))[-1].type == "RaceResumed"
    finally:
        await new.close()
        await old.close()
        await old_bp.close()
        await new_bp.close()
        keys = [k async for k in redis.scan_iter(match=f"{PREFIX}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        store.close()
        await engine.dispose()
