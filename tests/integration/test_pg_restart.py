"""PostgreSQL restarted (crashed: `pg_ctl stop -m immediate`) mid-race and during run uploads,
under two server processes on Redis.

The test runs its own throwaway PostgreSQL cluster and `redis-server` (tests/integration/
harness.py), so the shared servers are never restarted. Expected: while the database is away the
rooms keep their fixes buffered and unacked (the writer retries), uploads answer 503 and the
client retries them with the same `Idempotency-Key`; once it is back every buffered fix is
stored and acked, no acknowledged fix or upload is lost and none is stored twice, and the race
ends with each result counted once. Every wait is bounded; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from clients.sdk import RoomClosed, RoomConnection
from game.generate import Profile
from server.config import Settings
from server.store.db import create_engine
from server.store.migrate import upgrade
from server.store.read_models import RunRow
from tests.api.helpers import points, recent_track
from tests.conftest import in_thread, require_tools
from tests.integration.harness import (
    ThrowawayPostgres,
    ThrowawayRedis,
    start_servers,
    stop_servers,
)
from tests.integration.test_scale_out import Proc, _check_results_once, _stored, _tracks
from tests.rooms.conftest import SECRET, World, expected_finishes, gps_frames

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DISTANCE_M = 200.0
RUNS = RunRow.__table__  # type: ignore[attr-defined]


@dataclass
class Cluster:
    procs: list[Proc]
    settings: Settings
    pg: ThrowawayPostgres

    def room(self, i: int, race_id: str) -> str:
        return f"{self.procs[i].ws_url}/{race_id}"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_tools(
        ThrowawayPostgres.available() and ThrowawayRedis.available(),
        "PostgreSQL binaries (initdb, pg_ctl) and redis-server",
    )
    pg, redis = ThrowawayPostgres(), ThrowawayRedis(tmp_path)
    procs: list[Proc] = []
    try:
        pg.init()
        redis.start()
        in_thread(upgrade, pg.url)
        env = {
            "RETRORUN_DATABASE_URL": pg.url,
            "RETRORUN_REDIS_URL": redis.url,
            "RETRORUN_SECRET_KEY": SECRET,
            "RETRORUN_RATE_LIMITS_ENABLED": "false",
        }
        procs = start_servers(2, tmp_path, env)
        yield Cluster(procs, Settings(database_url=pg.url, secret_key=SECRET), pg)
    finally:
        stop_servers(procs)
        redis.kill()
        print(f"--- postgres ---\n{pg.log.read_text(errors='replace')[-3000:]}")
        pg.destroy()


async def _upload(
    http: httpx.AsyncClient, proc: Proc, token: str, body: dict[str, Any], key: str
) -> tuple[str, int]:
    """POST a run until it is answered 201, with one Idempotency-Key (bounded: 60 s)."""
    tries = 0
    async with asyncio.timeout(60):
        while True:
            tries += 1
            with contextlib.suppress(httpx.TransportError):
                answer = await http.post(
                    f"{proc.http_url}/api/v1/runs",
                    json=body,
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                )
                if answer.status_code == 201:
                    return str(answer.json()["id"]), tries
                assert answer.status_code in (500, 503), answer.text
            await asyncio.sleep(0.3)


async def test_postgresql_restarted_mid_race_loses_no_acked_fix_nor_upload(
    cluster: Cluster,
) -> None:
    world = World(cluster.settings)
    runners = await world.users(4)
    uploaders = await world.users(2)
    (moderator,) = await world.users(1, "moderator")
    gun, tracks = _tracks(runners, 106)
    expected = expected_finishes(tracks, DISTANCE_M, gun)
    race_id = await world.race(moderator, runners, DISTANCE_M, gun=gun)
    procs = cluster.procs

    conns = {
        rid: RoomConnection(
            cluster.room(n % 2, race_id),
            world.tokens[rid],
            sync_samples=0,
            deliver_acks=True,
            backoff_base_s=0.2,
            backoff_cap_s=1.0,
            max_reconnects=200,
        )
        for n, rid in enumerate(runners)
    }
    acked: dict[str, set[int]] = {rid: set() for rid in runners}
    closed: list[dict[str, Any]] = []

    async def consume(conn: RoomConnection, rid: str) -> None:
        with contextlib.suppress(RoomClosed):
            async with asyncio.timeout(150):
                async for frame in conn:
                    if frame["type"] == "ack":
                        acked[rid].add(frame["seq"])
                    elif frame.get("event") == "closed":
                        closed.append(frame)

    async def run(rid: str) -> None:
        conn = conns[rid]
        await conn.connect(retry=True)
        reader = asyncio.create_task(consume(conn, rid))
        async with asyncio.timeout(150):
            for f in gps_frames(tracks[rid], expected[rid][0] + 1):
                while not conn.connected or len(conn.unacked) > 60:
                    await asyncio.sleep(0.02)
                await conn.send_gps({k: v for k, v in f.items() if k not in ("type", "seq")})
                await asyncio.sleep(1 / 10)
            while conn.unacked and not reader.done():
                await asyncio.sleep(0.05)
        with contextlib.suppress(TimeoutError):  # the end of the race, if it comes
            await asyncio.wait_for(asyncio.shield(reader), 20)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await conn.close()

    runs = [asyncio.create_task(run(rid)) for rid in runners]
    total = sum(expected[rid][0] + 1 for rid in runners)
    async with asyncio.timeout(40):
        while sum(len(a) for a in acked.values()) < total * 0.3:
            await asyncio.sleep(0.02)
    before = {rid: set(a) for rid, a in acked.items()}

    bodies = [
        {"points": points(recent_track(Profile.HONEST_RECREATIONAL, 700 + i, 900.0))}
        for i in range(len(uploaders))
    ]
    async with httpx.AsyncClient(timeout=20) as http:
        await asyncio.to_thread(cluster.pg.stop, "immediate")  # a crash
        uploads = [
            asyncio.create_task(
                _upload(http, procs[i % 2], world.tokens[rid], bodies[i], f"k-{uuid.uuid4()}")
            )
            for i, rid in enumerate(uploaders)
        ]
        await asyncio.sleep(3.0)  # the database stays away a while
        acked_while_down = sum(len(a) for a in acked.values())
        await asyncio.to_thread(cluster.pg.start)
        answered = await asyncio.gather(*uploads)
        # a retry with the same key after the answer: the same run, not a second one
        after = {"points": points(recent_track(Profile.HONEST_RECREATIONAL, 799, 700.0))}
        again = await http.post(
            f"{procs[1].http_url}/api/v1/runs",
            json=after,
            headers={
                "Authorization": f"Bearer {world.tokens[uploaders[0]]}",
                "Idempotency-Key": "after-the-restart",
            },
        )
        assert again.status_code == 201
        twice = await http.post(
            f"{procs[0].http_url}/api/v1/runs",
            json=after,
            headers={
                "Authorization": f"Bearer {world.tokens[uploaders[0]]}",
                "Idempotency-Key": "after-the-restart",
            },
        )
        assert twice.json()["id"] == again.json()["id"]
        try:
            await asyncio.gather(*runs)
        finally:
            for rid, c in conns.items():
                print(rid, c.connected, len(c.unacked), c.reconnects, c.close_code, c.epoch)
            with contextlib.suppress(Exception):
                stream = await World(cluster.settings).stream(race_id)
                print("stream:", [(e.type, e.data.get("runner_id")) for e in stream][-12:])
                print("acked:", {rid: len(a) for rid, a in acked.items()})
                print("expected:", {rid: expected[rid][0] + 1 for rid in runners})
        for proc in procs:  # the service is back
            assert (await http.get(f"{proc.http_url}/readyz")).status_code == 200
    print(
        f"FIGURES acked before {sum(len(b) for b in before.values())}, acked while the database "
        f"was down {acked_while_down}, upload attempts {[t for _, t in answered]}"
    )

    assert any(t > 1 for _, t in answered)  # the uploads did meet the outage
    stored, stream = await _stored(cluster.settings, race_id)
    for rid in runners:
        assert acked[rid] == set(range(1, expected[rid][0] + 2))  # every fix acked in the end
        assert before[rid] <= acked[rid] <= set(stored[rid])  # no acked fix lost
        assert len(stored[rid]) == len(set(stored[rid]))  # none stored twice

    engine = create_engine(cluster.settings.database_url)
    try:
        async with engine.connect() as conn:
            for run_id, _ in answered:  # every answered upload is stored, once
                count = select(func.count()).where(RUNS.c.id == run_id)
                assert (await conn.execute(count)).scalar_one() == 1
            mine = select(func.count()).where(RUNS.c.runner_id == uploaders[0])
            assert (await conn.execute(mine)).scalar_one() == 2  # the upload and "after"
    finally:
        await engine.dispose()

    # a finish decided while the database was down is retried until it is stored (the room's
    # `WriteQueue`), not dropped: every runner finishes and the race closes
    finished = [e.data["runner_id"] for e in stream if e.type == "RunnerFinished"]
    assert sorted(finished) == sorted(runners), finished
    assert len(closed) == len(runners) and all(c["results"] == closed[0]["results"] for c in closed)
    results = _check_results_once(stream, runners)
    for rid in runners:
        assert abs(results[rid]["time_s"] - expected[rid][1]) < 0.002
