"""Scale-out: three `retrorun serve` processes on one PostgreSQL and one Redis (the real ones).

Each test makes its own PostgreSQL database and uses its own Redis database (emptied of
`retrorun:*` keys before and after), starts three server processes on free loopback ports, and
drives a live race with runners and spectators spread over them. Every wait is bounded; nothing
asserts on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from clients.sdk import RoomClosed, RoomConnection
from game.generate import Profile, generate
from server.config import Settings
from server.store.db import create_engine
from server.store.migrate import upgrade
from server.store.read_models import RaceFixChunkRow
from server.tracks import decode_track
from tests.conftest import PG_ADMIN_URL, in_thread, require_service
from tests.rooms.conftest import (
    SECRET,
    World,
    expected_finishes,
    gps_frames,
    join,
    recv,
    send_paced,
    shifted,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(90)]

DISTANCE_M = 200.0
RETRORUN = str(Path(sys.executable).with_name("retrorun"))
ROOM_PREFIX = "retrorun:rooms"


@dataclass
class Proc:
    """One server process."""

    port: int
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/rooms"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Cluster:
    procs: list[Proc]
    settings: Settings
    redis_url: str

    def room(self, i: int, race_id: str) -> str:
        return f"{self.procs[i].ws_url}/{race_id}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _clear_redis(url: str) -> None:
    client = Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match="retrorun:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    name = f"retrorun_scale_{uuid.uuid4().hex[:10]}"
    in_thread(asyncio.run, _pg(f'CREATE DATABASE "{name}"'))
    db_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    # a Redis database of this module's own (the shared fixtures use 15)
    redis_url = "redis://127.0.0.1:6379/11"
    procs: list[Proc] = []
    try:
        in_thread(upgrade, db_url)  # `retrorun migrate`, in-process
        in_thread(asyncio.run, _clear_redis(redis_url))
        env = {
            **os.environ,
            "RETRORUN_DATABASE_URL": db_url,
            "RETRORUN_REDIS_URL": redis_url,
            "RETRORUN_SECRET_KEY": SECRET,
            "RETRORUN_LOG_JSON": "false",
            "RETRORUN_ROOM_TICK_HZ": "4",
            "RETRORUN_AUTO_MIGRATE": "false",
        }
        for i in range(3):
            port = _free_port()
            log = tmp_path / f"server{i}.log"
            with log.open("wb") as out:
                popen = subprocess.Popen(
                    [RETRORUN, "serve", "--host", "127.0.0.1", "--port", str(port)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            procs.append(Proc(port, popen, log))
        for proc in procs:
            _wait_ready(proc)
        settings = Settings(database_url=db_url, secret_key=SECRET, log_json=False)
        yield Cluster(procs, settings, redis_url)
    finally:
        for i, proc in enumerate(procs):  # shown when a test fails
            print(f"--- server {i} (pid {proc.popen.pid}) ---\n{proc.tail(60)}")
        for proc in procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)
        in_thread(asyncio.run, _clear_redis(redis_url))
        in_thread(asyncio.run, _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _wait_ready(proc: Proc) -> None:
    for _ in range(300):  # 30 s
        if proc.popen.poll() is not None:
            raise RuntimeError(f"server exited with {proc.popen.returncode}:\n{proc.tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{proc.http_url}/readyz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server did not become ready:\n{proc.tail()}")


def _tracks(runners: list[str], seed: int) -> tuple[float, dict[str, Any]]:
    probes = {
        rid: generate(
            (Profile.HONEST_RECREATIONAL, Profile.HONEST_TRAINED)[i % 2], seed + i, 0.0, 330.0
        )
        for i, rid in enumerate(runners)
    }
    gun = round(time.time() - max(float(t.t[-1] - t.t[0]) for t in probes.values()) - 5.0, 3)
    return gun, {rid: shifted(t, gun + 0.5) for rid, t in probes.items()}


async def _owner(cluster: Cluster, race_id: str) -> tuple[int, int]:
    """(index of the owning process, lease token), from the lease value `<token>:<pid>-<id>`."""
    client = Redis.from_url(cluster.redis_url)
    try:
        value = await client.get(f"{ROOM_PREFIX}:{{{race_id}}}:lease")
    finally:
        await client.aclose()
    assert value is not None, "no process owns the room"
    token, _, node = value.decode().partition(":")
    pid = int(node.split("-")[0])
    return next(i for i, p in enumerate(cluster.procs) if p.popen.pid == pid), int(token)


async def _stored(settings: Settings, race_id: str) -> tuple[dict[str, list[int]], list[Any]]:
    """Stored fix seqs per runner (with repeats, if any), and the race stream."""
    engine = create_engine(settings.database_url)
    chunks = RaceFixChunkRow.__table__  # type: ignore[attr-defined]
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(chunks).where(chunks.c.race_id == race_id))).all()
    finally:
        await engine.dispose()
    stored: dict[str, list[int]] = {}
    for row in rows:
        assert len(decode_track(row.data)) == row.last_seq - row.first_seq + 1
        stored.setdefault(row.runner_id, []).extend(range(row.first_seq, row.last_seq + 1))
    return stored, await World(settings).stream(race_id)


def _check_results_once(stream: list[Any], runners: list[str]) -> dict[str, Any]:
    finished = Counter(e.data["runner_id"] for e in stream if e.type == "RunnerFinished")
    assert finished == Counter(runners), finished  # each runner's result counted once
    (closed,) = [e for e in stream if e.type == "RaceFinished"]
    placed = [r["runner_id"] for r in closed.data["results"]]
    assert sorted(placed) == sorted(runners)
    return {r["runner_id"]: r for r in closed.data["results"]}


@pytest.fixture
async def world(cluster: Cluster) -> AsyncIterator[World]:
    yield World(cluster.settings)


async def test_runners_on_three_processes_see_identical_standings(
    cluster: Cluster, world: World
) -> None:
    runners = await world.users(6)
    spectators = await world.users(3)
    (moderator,) = await world.users(1, "moderator")
    gun, tracks = _tracks(runners, 100)
    expected = expected_finishes(tracks, DISTANCE_M, gun)
    race_id = await world.race(moderator, runners, DISTANCE_M, gun=gun)

    procs = cluster.procs
    watchers = [await join(procs[i], race_id, world.tokens[s]) for i, s in enumerate(spectators)]
    assert len({w["epoch"] for _, w in watchers}) == 1  # one room, one history, any process
    seen: list[list[dict[str, Any]]] = [[], [], []]

    async def watch(i: int) -> None:
        ws = watchers[i][0]
        async with asyncio.timeout(60):
            while True:
                frame = await recv(ws, 60)
                seen[i].append(frame)
                if frame.get("event") == "closed":
                    return

    collectors = [asyncio.create_task(watch(i)) for i in range(3)]

    async def run(n: int, rid: str) -> set[int]:
        ws, welcome = await join(procs[n % 3], race_id, world.tokens[rid])
        assert welcome["role"] == "runner"
        frames = gps_frames(tracks[rid], expected[rid][0] + 1)
        sender = asyncio.create_task(send_paced(ws, frames, per_s=15.0))
        acked: set[int] = set()
        async with asyncio.timeout(60):
            while len(acked) < len(frames):
                frame = await recv(ws, 60)
                assert frame["type"] != "error", frame
                if frame["type"] == "ack":
                    acked.add(frame["seq"])
        await sender
        await ws.close()
        return acked

    acks = await asyncio.gather(*(run(n, rid) for n, rid in enumerate(runners)))
    await asyncio.gather(*collectors)
    for ws, _ in watchers:
        await ws.close()

    closed = [next(f for f in s if f.get("event") == "closed") for s in seen]
    assert closed[0]["results"] == closed[1]["results"] == closed[2]["results"]
    by_tick: dict[int, set[bytes]] = {}
    for frames in seen:
        events = [f["seq"] for f in frames if f["type"] in ("event", "countdown") and "seq" in f]
        assert events == list(range(events[0], events[0] + len(events)))  # no gap, no repeat
        for f in frames:
            if f["type"] == "standings":
                key = repr((f["epoch"], f["as_of_seq"], f["count"], f["leaders"])).encode()
                by_tick.setdefault(f["tick"], set()).add(key)
    assert by_tick and all(len(v) == 1 for v in by_tick.values())  # one standings per tick
    finishes = {f["runner_id"]: f for f in seen[0] if f.get("event") == "runner_finished"}
    for rid in runners:
        assert abs(finishes[rid]["time_s"] - expected[rid][1]) < 0.002
    stored, stream = await _stored(cluster.settings, race_id)
    for rid, got in zip(runners, acks, strict=True):
        assert got <= set(stored[rid]) and len(stored[rid]) == len(set(stored[rid]))
    _check_results_once(stream, runners)


async def test_killing_the_owner_mid_race_moves_the_room_and_loses_no_acked_fix(
    cluster: Cluster, world: World
) -> None:
    runners = await world.users(6)
    spectators = await world.users(3)
    (moderator,) = await world.users(1, "moderator")
    gun, tracks = _tracks(runners, 106)
    expected = expected_finishes(tracks, DISTANCE_M, gun)
    race_id = await world.race(moderator, runners, DISTANCE_M, gun=gun)
    procs = cluster.procs

    def sdk(i: int, rid: str) -> RoomConnection:
        return RoomConnection(
            cluster.room(i, race_id),
            world.tokens[rid],
            sync_samples=0,
            deliver_acks=True,
            backoff_base_s=0.1,
            backoff_cap_s=0.5,
            max_reconnects=60,
        )

    watchers = [sdk(i, s) for i, s in enumerate(spectators)]
    for w in watchers:
        await w.connect()
    owner, token = await _owner(cluster, race_id)
    assert owner == 0  # the first socket's process claimed the room

    conns = {rid: sdk(n % 3, rid) for n, rid in enumerate(runners)}
    where = {rid: n % 3 for n, rid in enumerate(runners)}
    acked: dict[str, set[int]] = {rid: set() for rid in runners}
    closed: list[dict[str, Any]] = []

    async def consume(conn: RoomConnection, rid: str | None) -> None:
        with contextlib.suppress(RoomClosed):  # 4504 once the race is over
            async with asyncio.timeout(75):
                async for frame in conn:
                    if frame["type"] == "ack" and rid is not None:
                        acked[rid].add(frame["seq"])
                    elif frame.get("event") == "closed":
                        closed.append(frame)

    async def run(rid: str) -> None:
        conn = conns[rid]
        await conn.connect()
        reader = asyncio.create_task(consume(conn, rid))
        async with asyncio.timeout(75):
            for f in gps_frames(tracks[rid], expected[rid][0] + 1):
                # at most 25 unacked: a resend after a reconnect stays under the rate limit
                while not conn.connected or len(conn.unacked) > 25:
                    await asyncio.sleep(0.02)
                await conn.send_gps({k: v for k, v in f.items() if k not in ("type", "seq")})
                await asyncio.sleep(1 / 15)
            # the last acks; a fix resent after the race ended is refused (race_not_live)
            # although it was stored: the welcome's acked_seq says so, the check below too
            while conn.unacked and not reader.done():
                await asyncio.sleep(0.05)
        await reader

    readers = [asyncio.create_task(consume(w, None)) for w in watchers]
    runs = [asyncio.create_task(run(rid)) for rid in runners]
    total = sum(expected[rid][0] + 1 for rid in runners)
    async with asyncio.timeout(30):  # mid-race: acks flowing, fixes in flight
        while sum(len(a) for a in acked.values()) < total * 0.4:
            await asyncio.sleep(0.02)
    survivor = 1
    for conn in [*conns.values(), *watchers]:
        if conn.url.startswith(procs[owner].ws_url):
            conn.url = cluster.room(survivor, race_id)  # a load balancer would do this
    before = {rid: set(a) for rid, a in acked.items()}
    os.kill(procs[owner].popen.pid, signal.SIGKILL)
    procs[owner].popen.wait(10)

    try:
        await asyncio.gather(*runs)
        await asyncio.gather(*readers)
    finally:  # shown when a test fails
        for rid, c in conns.items():
            print(rid, where[rid], c.url, c.connected, len(c.unacked), c.reconnects, c.close_code)
    new_owner, new_token = await _owner(cluster, race_id)
    assert new_owner != owner and new_token > token
    assert all(c.reconnects >= 1 for c in [*conns.values(), *watchers])  # moved or told to
    # Every client knows the end: the `closed` event, or, for one whose reconnect landed after
    # it, the welcome of the finished race (it carries the same results, then 4504).
    assert closed, "the room announced the end"
    finals = [c.results for c in [*conns.values(), *watchers]]
    assert all(f == closed[0]["results"] for f in finals), finals
    assert any(where[rid] == owner for rid in runners)

    stored, stream = await _stored(cluster.settings, race_id)
    for rid in runners:
        assert before[rid] <= acked[rid] <= set(stored[rid])  # no acked fix lost
        assert len(stored[rid]) == len(set(stored[rid]))  # and none stored twice
    results = _check_results_once(stream, runners)
    for rid in runners:
        assert abs(results[rid]["time_s"] - expected[rid][1]) < 0.002
