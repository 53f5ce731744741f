"""Resume without gaps, slow consumers dropped alone, and a restart that keeps every acked fix."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from game.generate import Profile, generate
from server.store.db import create_engine
from server.store.read_models import RaceFixChunkRow
from server.tracks import decode_track
from tests.rooms.conftest import (
    LiveServer,
    World,
    closed_by_server,
    expected_finishes,
    gps_frames,
    join,
    recv,
    room_settings,
    send_paced,
    shifted,
    start_server,
    until,
)


async def _toggle(mod: Any, times: int) -> None:
    """Pause and resume the race `times` times each (two events per round)."""
    for _ in range(times):
        for action, event in (("pause", "paused"), ("resume", "resumed")):
            await mod.send(orjson.dumps({"type": "control", "action": action}).decode())
            got = await until(mod, lambda f, e=event: f.get("event") == e or f["type"] == "error")
            assert got["type"] != "error", got
            await asyncio.sleep(1 / 15)  # under the rate limit


#: gps frames have their own rate budget (server/rooms/ws.py: 50 a second)
GPS_PER_S = 45.0


def _seqs(frames: list[dict[str, Any]]) -> set[int]:
    return {f["seq"] for f in frames if f["type"] in ("event", "countdown")}


async def test_a_client_that_drops_and_resumes_misses_no_seq(
    live: LiveServer, world: World
) -> None:
    runner, organiser, spectator = await world.users(3)
    race_id = await world.race(organiser, [runner], 500.0, gun=time.time() - 20)
    mod, _ = await join(live, race_id, world.tokens[organiser])
    spec, welcome = await join(live, race_id, world.tokens[spectator])
    first: list[dict[str, Any]] = []
    await _toggle(mod, 2)
    async with asyncio.timeout(10):
        while len(_seqs(first)) < 4:
            first.append(await recv(spec))
    await spec.close()
    await _toggle(mod, 3)  # missed while away
    spec, again = await join(live, race_id, world.tokens[spectator])
    assert again["epoch"] == welcome["epoch"] and again["seq"] == max(_seqs(first)) + 6
    last = max(_seqs(first))
    await spec.send(
        orjson.dumps({"type": "resume", "after_seq": last, "epoch": again["epoch"]}).decode()
    )
    second: list[dict[str, Any]] = []
    await _toggle(mod, 1)
    async with asyncio.timeout(10):
        while max(_seqs(second), default=0) < again["seq"] + 2:
            second.append(await recv(spec))
    seqs = _seqs(first) | _seqs(second)
    assert seqs == set(range(welcome["seq"] + 1, again["seq"] + 3))
    # another epoch (history lost): a fresh snapshot instead of a replay
    await spec.send('{"type": "resume", "after_seq": 1, "epoch": "gone"}')
    fresh = await until(spec, lambda f: f["type"] == "welcome")
    assert fresh["seq"] == again["seq"] + 2 and fresh["snapshot"]["race"]["status"] == "running"
    for ws in (mod, spec):
        await ws.close()


async def test_a_slow_consumer_is_dropped_with_1013_and_the_others_carry_on(
    live: LiveServer, world: World
) -> None:
    runner, organiser, fast_one, slow_one = await world.users(4)
    closed_before = await asyncio.to_thread(closed_by_server, live.http_url)
    race_id = await world.race(organiser, [runner], 500.0, gun=time.time() - 20)
    mod, _ = await join(live, race_id, world.tokens[organiser])
    fast, _ = await join(live, race_id, world.tokens[fast_one])
    await _toggle(mod, 15)  # 30 events of history
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", live.port))
    sock.setblocking(False)
    slow = await connect(f"{live.ws_url}/{race_id}", sock=sock, max_queue=1, compression=None)
    await slow.send(orjson.dumps({"type": "auth", "token": world.tokens[slow_one]}).decode())

    async def ask_replays() -> None:  # never reads: every replay piles up on the server side
        for _ in range(400):
            await slow.send('{"type": "resume", "after_seq": 0}')
            await asyncio.sleep(1 / 18)

    asker = asyncio.create_task(ask_replays())
    started = time.monotonic()
    fast_events = 0
    while time.monotonic() - started < 7.5:  # the others keep getting every event promptly
        await _toggle(mod, 1)
        await until(fast, lambda f: f.get("event") == "resumed", 2.0)
        fast_events += 2
        await asyncio.sleep(0.2)
    asker.cancel()
    assert fast_events >= 10
    code = None
    async with asyncio.timeout(15):
        try:
            while True:
                await slow.recv()
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
    assert code == 1013
    closed = await asyncio.to_thread(closed_by_server, live.http_url)  # operators see it
    assert closed.get("1013", 0) == closed_before.get("1013", 0) + 1
    for ws in (mod, fast):
        await ws.close()


async def test_a_restart_mid_race_loses_no_acked_fix(tmp_path: Path) -> None:
    settings = room_settings(tmp_path / "restart.db")
    srv = start_server(settings)
    world = World(settings)
    runners = await world.users(2)
    (organiser,) = await world.users(1, "moderator")
    probes = {
        r: generate(Profile.HONEST_RECREATIONAL, seed, 0.0, 330.0)
        for r, seed in zip(runners, (100, 102), strict=True)
    }
    gun = round(time.time() - max(float(t.t[-1] - t.t[0]) for t in probes.values()) - 5.0, 3)
    tracks = {r: shifted(t, gun + 0.5) for r, t in probes.items()}
    expected = expected_finishes(tracks, 200.0, gun)
    race_id = await world.race(organiser, runners, 200.0, gun=gun)
    acked: dict[str, set[int]] = {r: set() for r in runners}

    async def first_half(rid: str) -> None:
        ws, _ = await join(srv, race_id, world.tokens[rid])
        sender = asyncio.create_task(send_paced(ws, gps_frames(tracks[rid], 50)))  # before the line
        try:
            while True:
                frame = await recv(ws)
                if frame["type"] == "ack":
                    acked[rid].add(frame["seq"])
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1012  # server restarting
        sender.cancel()

    halves = [asyncio.create_task(first_half(r)) for r in runners]
    async with asyncio.timeout(30):  # mid-stream: some fixes acked, some in flight
        while not all(acked[r] for r in runners):
            await asyncio.sleep(0.05)
    await asyncio.to_thread(srv.stop)
    await asyncio.gather(*halves)
    assert all(acked[r] for r in runners)

    engine = create_engine(settings.database_url)
    chunks = RaceFixChunkRow.__table__  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(chunks).where(chunks.c.race_id == race_id))).all()
    await engine.dispose()
    for rid in runners:
        stored: set[int] = set()
        for row in (r for r in rows if r.runner_id == rid):
            assert len(decode_track(row.data)) == row.last_seq - row.first_seq + 1
            stored |= set(range(row.first_seq, row.last_seq + 1))
        assert acked[rid] <= stored

    srv = start_server(settings)  # the same database, a fresh process state
    try:

        async def finish(rid: str) -> dict[str, Any]:
            ws, welcome = await join(srv, race_id, world.tokens[rid])
            assert welcome["acked_seq"] >= max(acked[rid])
            frames = gps_frames(tracks[rid], expected[rid][0] + 1)
            resend = [f for f in frames if f["seq"] > max(acked[rid])]  # at-least-once
            await send_paced(ws, resend)
            done = await until(
                ws, lambda f: f.get("event") == "runner_finished" and f["runner_id"] == rid
            )
            await ws.close()
            return done

        for done in await asyncio.gather(*(finish(r) for r in runners)):
            assert abs(done["time_s"] - expected[done["runner_id"]][1]) < 0.002
    finally:
        srv.stop()


async def test_a_finish_before_a_restart_stands_after_it_and_is_not_repeated(
    tmp_path: Path,
) -> None:
    """The room keeps no fixes in memory: after a restart it rebuilds the live race from the
    stored ones, and a runner who had finished is finished again there (the verdict run anew
    on their stored fixes), with no second `RunnerFinished`."""
    settings = room_settings(tmp_path / "refinish.db")
    srv = start_server(settings)
    world = World(settings)
    first, second = await world.users(2)  # to finish: `first` before the restart
    (organiser,) = await world.users(1, "moderator")
    probes = {
        r: generate(Profile.HONEST_RECREATIONAL, seed, 0.0, 330.0)
        for r, seed in zip((first, second), (100, 102), strict=True)
    }
    gun = round(time.time() - max(float(t.t[-1] - t.t[0]) for t in probes.values()) - 5.0, 3)
    tracks = {r: shifted(t, gun + 0.5) for r, t in probes.items()}
    expected = expected_finishes(tracks, 200.0, gun)
    race_id = await world.race(organiser, [first, second], 200.0, gun=gun)
    try:
        ws, _ = await join(srv, race_id, world.tokens[first])
        await send_paced(ws, gps_frames(tracks[first], expected[first][0] + 1))
        done = await until(ws, lambda f: f.get("event") == "runner_finished")
        assert done["runner_id"] == first and done["status"] == "finished"
        await ws.close()
    finally:
        await asyncio.to_thread(srv.stop)

    srv = start_server(settings)  # the same database, a fresh process state
    try:
        spec, welcome = await join(srv, race_id, world.tokens[organiser])
        (row,) = [r for r in welcome["snapshot"]["leaders"] if r["runner_id"] == first]
        assert (row["rank"], row["status"]) == (1, "finished")
        assert abs(row["time_s"] - expected[first][1]) < 0.002
        ws, _ = await join(srv, race_id, world.tokens[second])
        await send_paced(ws, gps_frames(tracks[second], expected[second][0] + 1))
        closed = await until(spec, lambda f: f.get("event") == "closed", 30)
        by_time = sorted((first, second), key=lambda r: expected[r][1])
        assert [r["runner_id"] for r in closed["results"]] == by_time
        assert [r["status"] for r in closed["results"]] == ["finished", "finished"]
        await ws.close()
        await spec.close()
    finally:
        srv.stop()
    events = await world.stream(race_id)
    assert [e.data["runner_id"] for e in events if e.type == "RunnerFinished"] == [first, second]


async def test_a_finish_whose_stored_fixes_fall_short_is_dropped_and_the_room_carries_on(
    live: LiveServer, world: World, caplog: Any
) -> None:
    """The finish verdict runs on the runner's stored fixes. Should some of them be gone from
    the store (they never should), that finish is logged, flagged to the moderators and
    dropped, not retried: a retry would hold up the room's writer and every ack and finish
    behind it."""
    short, other = await world.users(2)
    (organiser,) = await world.users(1, "moderator")
    probes = {
        r: generate(Profile.HONEST_RECREATIONAL, seed, 0.0, 330.0)
        for r, seed in zip((short, other), (104, 106), strict=True)
    }
    gun = round(time.time() - max(float(t.t[-1] - t.t[0]) for t in probes.values()) - 5.0, 3)
    tracks = {r: shifted(t, gun + 0.5) for r, t in probes.items()}
    expected = expected_finishes(tracks, 200.0, gun)
    race_id = await world.race(organiser, [short, other], 200.0, gun=gun)
    mod, _ = await join(live, race_id, world.tokens[organiser])
    ws, _ = await join(live, race_id, world.tokens[short])
    crossing = expected[short][0] + 1
    frames = gps_frames(tracks[short], crossing)
    half = crossing // 2
    await send_paced(ws, frames[:half], GPS_PER_S)
    await until(ws, lambda f: f["type"] == "ack" and f["seq"] == half)
    engine = create_engine(live.settings.database_url)  # the first half is lost from the store
    try:
        async with engine.begin() as conn:
            table = RaceFixChunkRow.__table__  # type: ignore[attr-defined]
            gone = await conn.execute(
                table.delete().where(table.c.race_id == race_id, table.c.runner_id == short)
            )
            assert gone.rowcount > 0
    finally:
        await engine.dispose()
    with caplog.at_level("ERROR", logger="server.rooms.room"):
        await send_paced(ws, frames[half:], GPS_PER_S)
        await until(ws, lambda f: f["type"] == "ack" and f["seq"] == crossing)  # still stored
        flag = await until(mod, lambda f: f.get("code") == "finish_unverified")  # moderators
        assert (flag["event"], flag["runner_id"], flag["hard_fail"]) == ("flag", short, False)
        assert flag["evidence"]["stored"] < flag["evidence"]["fixes"]
        late, _ = await join(live, race_id, world.tokens[other])
        await send_paced(late, gps_frames(tracks[other], expected[other][0] + 1), GPS_PER_S)
        done = await until(late, lambda f: f.get("event") == "runner_finished")
        assert done["runner_id"] == other  # the writer went on to the next finish
        await ws.close()
        await late.close()
        await mod.close()
    assert any(
        "fixes missing" in r.getMessage() and short in r.getMessage() for r in caplog.records
    )
    finished = [
        e.data["runner_id"] for e in await world.stream(race_id) if e.type == "RunnerFinished"
    ]
    assert finished == [other]
