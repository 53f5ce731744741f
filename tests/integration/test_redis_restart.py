"""Redis restarted empty mid-race, under three server processes on PostgreSQL.

The test runs its own throwaway `redis-server` (no persistence) on a free loopback port, so it
can kill it and start it again empty without touching the shared Redis. Expected: every owner
loses its lease and stops its room, a process holding sockets takes it over with a new `epoch`
(the history went with Redis), the clients reconnect, get a fresh welcome and resend what was
not stored; no acknowledged fix is lost, no result counted twice; and the leaderboards, gone with
Redis, are rebuilt from the event log (`server/boards/keeper.py`). Every wait is bounded; nothing
asserts on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from clients.sdk import RoomClosed, RoomConnection
from game.generate import Profile
from server.boards.redis import RedisLeaderboards
from server.config import Settings
from server.store.migrate import upgrade
from tests.api.helpers import points, recent_track
from tests.conftest import PG_ADMIN_URL, in_thread, require_service, require_tools
from tests.integration.harness import ThrowawayRedis, start_servers, stop_servers
from tests.integration.test_scale_out import Proc, _check_results_once, _pg, _stored, _tracks
from tests.rooms.conftest import SECRET, World, expected_finishes, gps_frames

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(150)]

DISTANCE_M = 200.0
ROOM_PREFIX = "retrorun:rooms"


@dataclass
class Cluster:
    procs: list[Proc]
    settings: Settings
    redis: ThrowawayRedis

    def room(self, i: int, race_id: str) -> str:
        return f"{self.procs[i].ws_url}/{race_id}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_tools(ThrowawayRedis.available(), "redis-server (this test runs its own)")
    name = f"retrorun_redisrestart_{uuid.uuid4().hex[:10]}"
    in_thread(asyncio.run, _pg(f'CREATE DATABASE "{name}"'))
    db_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    redis = ThrowawayRedis(tmp_path)
    procs: list[Proc] = []
    try:
        redis.start()
        in_thread(upgrade, db_url)
        env = {
            "RETRORUN_DATABASE_URL": db_url,
            "RETRORUN_REDIS_URL": redis.url,
            "RETRORUN_SECRET_KEY": SECRET,
        }
        procs = start_servers(3, tmp_path, env)
        settings = Settings(database_url=db_url, secret_key=SECRET, log_json=False)
        yield Cluster(procs, settings, redis)
    finally:
        stop_servers(procs)
        redis.kill()
        in_thread(asyncio.run, _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _xp_board(url: str) -> dict[str, float]:
    client = Redis.from_url(url)
    try:
        return {e.runner_id: e.score for e in await RedisLeaderboards(client).top("xp:all", 100)}
    finally:
        await client.aclose()


async def test_redis_restarted_empty_mid_race_loses_no_acked_fix_and_boards_come_back(
    cluster: Cluster,
) -> None:
    world = World(cluster.settings)
    runners = await world.users(6)
    spectators = await world.users(3)
    uploaders = await world.users(3)
    (moderator,) = await world.users(1, "moderator")
    procs = cluster.procs

    # Leaderboards before the race: runs uploaded through the API (not by race runners).
    async with httpx.AsyncClient(timeout=30) as http:
        for i, rid in enumerate(uploaders):
            track = recent_track(Profile.HONEST_RECREATIONAL, 500 + i, 800.0 + 300 * i)
            answer = await http.post(
                f"{procs[i].http_url}/api/v1/runs",
                json={"points": points(track)},
                headers={"Authorization": f"Bearer {world.tokens[rid]}"},
            )
            assert answer.status_code == 201, answer.text
    board_before = await _xp_board(cluster.redis.url)
    uploaders = [r for r in uploaders if r in board_before]  # runs that were credited
    assert uploaders and all(board_before[r] > 0 for r in uploaders)

    gun, tracks = _tracks(runners, 106)
    expected = expected_finishes(tracks, DISTANCE_M, gun)
    race_id = await world.race(moderator, runners, DISTANCE_M, gun=gun)

    def sdk(i: int, rid: str) -> RoomConnection:
        return RoomConnection(
            cluster.room(i, race_id),
            world.tokens[rid],
            sync_samples=0,
            deliver_acks=True,
            backoff_base_s=0.1,
            backoff_cap_s=0.5,
            max_reconnects=100,
        )

    watchers = [sdk(i, s) for i, s in enumerate(spectators)]
    for w in watchers:
        await w.connect(retry=True)
    epoch_before = {w.epoch for w in watchers}
    assert len(epoch_before) == 1 and None not in epoch_before

    conns = {rid: sdk(n % 3, rid) for n, rid in enumerate(runners)}
    acked: dict[str, set[int]] = {rid: set() for rid in runners}
    closed: list[dict[str, Any]] = []
    restarted_at: list[float] = []  # when Redis was back (empty)
    first_ack_after: dict[str, float] = {}  # per runner: its first ack after that

    async def consume(conn: RoomConnection, rid: str | None) -> None:
        with contextlib.suppress(RoomClosed):  # 4504 once the race is over
            async with asyncio.timeout(100):
                async for frame in conn:
                    if frame["type"] == "ack" and rid is not None:
                        acked[rid].add(frame["seq"])
                        if restarted_at and rid not in first_ack_after:
                            first_ack_after[rid] = time.monotonic() - restarted_at[0]
                    elif frame.get("event") == "closed":
                        closed.append(frame)

    async def run(rid: str) -> None:
        conn = conns[rid]
        await conn.connect(retry=True)
        reader = asyncio.create_task(consume(conn, rid))
        async with asyncio.timeout(100):
            for f in gps_frames(tracks[rid], expected[rid][0] + 1):
                while not conn.connected or len(conn.unacked) > 25:
                    await asyncio.sleep(0.02)
                await conn.send_gps({k: v for k, v in f.items() if k not in ("type", "seq")})
                await asyncio.sleep(1 / 15)
            while conn.unacked and not reader.done():
                await asyncio.sleep(0.05)
        await reader

    readers = [asyncio.create_task(consume(w, None)) for w in watchers]
    runs = [asyncio.create_task(run(rid)) for rid in runners]
    total = sum(expected[rid][0] + 1 for rid in runners)
    async with asyncio.timeout(40):  # mid-race: acks flowing, fixes in flight
        while sum(len(a) for a in acked.values()) < total * 0.4:
            await asyncio.sleep(0.02)
    before = {rid: set(a) for rid, a in acked.items()}
    reconnects_before = sum(c.reconnects for c in [*conns.values(), *watchers])

    cluster.redis.kill()  # Redis gone, with everything it held
    await asyncio.sleep(1.0)
    cluster.redis.start()  # back, empty
    restarted_at.append(time.monotonic())

    try:
        await asyncio.gather(*runs)
        await asyncio.gather(*readers)
    finally:  # shown when a test fails
        for rid, c in conns.items():
            print(rid, c.url, c.connected, len(c.unacked), c.reconnects, c.close_code, c.epoch)

    # Clients were moved to a new owner and got fresh snapshots under a new epoch.
    assert sum(c.reconnects for c in [*conns.values(), *watchers]) > reconnects_before
    epochs_after = {c.epoch for c in [*conns.values(), *watchers]}
    assert epoch_before.isdisjoint(epochs_after)
    # Every client knows the end: the `closed` event, or, for one whose reconnect landed after
    # it, the welcome of the finished race (it carries the same results, then 4504).
    assert closed, "the room announced the end"
    finals = [c.results for c in [*conns.values(), *watchers]]
    assert all(f == closed[0]["results"] for f in finals), finals

    # Nothing acknowledged was lost, nothing stored or counted twice.
    stored, stream = await _stored(cluster.settings, race_id)
    for rid in runners:
        assert before[rid] <= acked[rid] <= set(stored[rid])
        assert len(stored[rid]) == len(set(stored[rid]))
    results = _check_results_once(stream, runners)
    for rid in runners:
        assert abs(results[rid]["time_s"] - expected[rid][1]) < 0.002

    # The boards came back from the event log: the uploaders' entries as they were.
    board: dict[str, float] = {}
    async with asyncio.timeout(30):
        while not set(uploaders) <= set(board):
            await asyncio.sleep(0.2)
            board = await _xp_board(cluster.redis.url)
    boards_back_s = time.monotonic() - restarted_at[0]
    assert {r: board[r] for r in uploaders} == {r: board_before[r] for r in uploaders}
    client = Redis.from_url(cluster.redis.url)
    try:
        assert await client.exists("retrorun:boards-meta:built")
    finally:
        await client.aclose()
    logs = "\n".join(p.log.read_text(errors="replace") for p in procs)
    assert logs.count("Redis boards rebuilt from") >= 2  # at the first start, and after
    print(
        f"FIGURES sent {total}, acked before the kill {sum(len(b) for b in before.values())}, "
        f"acked {sum(len(a) for a in acked.values())}, "
        f"stored {sum(len(v) for v in stored.values())}, "
        f"reconnects {sum(c.reconnects for c in [*conns.values(), *watchers])}, "
        f"first ack after the restart per runner (s) "
        f"{sorted(round(v, 2) for v in first_ack_after.values())}, "
        f"boards complete again after {boards_back_s:.1f} s (checked after the race)"
    )
