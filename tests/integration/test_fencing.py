"""A room moving between owners (real PostgreSQL and Redis, two backplanes in one process
standing for two server processes): an owner whose lease lapsed cannot append once the next
owner holds the room, and the next owner broadcasts what its predecessor committed and did not
get to send."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from game import races
from server.config import Settings
from server.rooms.backplane import RedisBackplane
from server.rooms.backplane.base import Kept, Outbound
from server.rooms.registry import RoomRegistry
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


@dataclass
class Owners:
    """A race and two server processes' backplanes on one Redis (the old owner, the next)."""

    store: EventStore
    redis: Redis
    old_bp: RedisBackplane
    new_bp: RedisBackplane
    moderator: str
    runners: list[str]
    race_id: str

    @property
    def stream(self) -> str:
        return f"race-{self.race_id}"


@pytest.fixture
async def owners(db_url: str) -> AsyncIterator[Owners]:
    world = World(Settings(database_url=db_url, secret_key=SECRET, log_json=False))
    runners = await world.users(2)
    (moderator,) = await world.users(1, "moderator")
    race_id = await world.race(moderator, runners, 200.0, gun=time.time() - 5.0)
    redis = Redis.from_url(REDIS_URL)
    engine = create_engine(db_url)
    store = EventStore(engine)
    old_bp = RedisBackplane(redis, prefix=PREFIX, node="old-owner")
    new_bp = RedisBackplane(redis, prefix=PREFIX, node="new-owner")
    try:
        yield Owners(store, redis, old_bp, new_bp, moderator, runners, race_id)
    finally:
        await old_bp.close()
        await new_bp.close()
        keys = [k async for k in redis.scan_iter(match=f"{PREFIX}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        store.close()
        await engine.dispose()


async def test_a_stale_room_owner_cannot_append_after_the_new_owner_wrote(owners: Owners) -> None:
    o = owners
    store, old_bp, new_bp, moderator, stream = o.store, o.old_bp, o.new_bp, o.moderator, o.stream
    old, new = Room(o.race_id, store, old_bp), Room(o.race_id, store, new_bp)
    try:
        await old.open()
        assert old.fence is not None and old_bp.owns(o.race_id)
        # The old owner stalls past its lease (a long pause, a partition from Redis): the lease
        # lapses in Redis while the old room still runs, and another process takes the room.
        await o.redis.delete(old_bp.keys(o.race_id).lease)
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
            await old._commit([races.Disqualify(moderator, o.runners[0], "stale")], moderator)
        assert (info.value.token, info.value.held) == (old.fence, new.fence)
        events = await store.load(stream)
        assert len(events) == version and events[-1].type == "RacePaused"

        # The new owner keeps writing.
        await new._commit([races.Resume(moderator)], moderator)
        assert (await store.load(stream))[-1].type == "RaceResumed"
    finally:
        await new.close()
        await old.close()


async def _kept_up_to(bp: RedisBackplane, race_id: str, seq: int) -> Kept:
    """The room's kept history in Redis once it holds broadcast `seq` (the owner publishes
    through a queue of its own)."""
    async with asyncio.timeout(10):
        while True:
            kept = await bp.history(race_id)
            if kept is not None and kept.seq >= seq:
                return kept
            await asyncio.sleep(0.02)


async def test_a_new_owner_broadcasts_what_its_predecessor_committed_and_did_not_send(
    owners: Owners, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An owner that stops between a commit and its publish leaves an event in the log that no
    client was sent. The next owner continues the sequence and broadcasts it, under the same
    epoch, so that a client resuming by `seq` gets it; what was sent is not sent again."""
    o = owners
    store, new_bp, moderator, race_id = o.store, o.new_bp, o.moderator, o.race_id
    old_rooms, new_rooms = RoomRegistry(store, o.old_bp), RoomRegistry(store, new_bp)
    try:
        old = await old_rooms.get(race_id)
        assert isinstance(old, Room)
        await old._commit([races.Pause(moderator)], moderator)  # committed and sent
        paused = await _kept_up_to(new_bp, race_id, old.out.seq)
        assert paused.version == await store.version(o.stream)

        async def lost(out: Outbound) -> None:  # the process stops before its frame goes out
            return None

        monkeypatch.setattr(old.out, "publish", lost)
        await old._commit([races.Disqualify(moderator, o.runners[0], "cut the course")], moderator)
        assert (await store.load(o.stream))[-1].type == "RunnerDisqualified"
        unsent = await new_bp.history(race_id)  # in the log, sent to no one
        assert unsent is not None and (unsent.seq, unsent.version) == (paused.seq, paused.version)
        await o.redis.delete(o.old_bp.keys(race_id).lease)  # its lease lapses; the room moves

        new = await new_rooms.get(race_id)
        assert isinstance(new, Room) and new_bp.owns(race_id)
        kept = await _kept_up_to(new_bp, race_id, paused.seq + 1)
        sent = [orjson.loads(f.text) for f in kept.frames]
        assert [f["seq"] for f in sent] == list(range(sent[0]["seq"], paused.seq + 2))
        assert {f["epoch"] for f in sent} == {paused.epoch}  # clients resume, no fresh welcome
        assert [f.get("event") for f in sent].count("paused") == 1  # sent once, not again
        assert (sent[-1]["event"], sent[-1]["runner_id"], sent[-1]["reason"]) == (
            "disqualified",
            o.runners[0],
            "cut the course",
        )
        assert kept.version == await store.version(o.stream)
        await new._commit([races.Resume(moderator)], moderator)  # and the room goes on
        resumed = await _kept_up_to(new_bp, race_id, paused.seq + 2)
        assert orjson.loads(resumed.frames[-1].text)["event"] == "resumed"
    finally:
        await new_rooms.close()
        await old_rooms.close()
