"""The bounded broadcast history behind `resume`, and standings that replace each other.

A room keeps its last `HISTORY` numbered broadcasts (server/rooms/common.py): a `resume` from
inside them replays exactly the missed ones, one from further back gets a fresh `welcome`. A
socket that cannot keep up gets the latest standings, not every one it missed: a newer standings
frame replaces the unsent older one in its queue (server/rooms/connection.py).

Many broadcasts are made cheaply by committing a run of pause/resume events straight to the
race's stream in one append (as the API would, one by one): the room catches up and broadcasts
each of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from game import races
from game.generate import Profile, generate
from server.commands import load_state
from server.config import Settings
from server.rooms.common import HISTORY
from server.store.db import create_engine
from server.store.event_store import EventStore, NewEvent
from tests.rooms.conftest import LiveServer, World, gps_frames, join, recv, shifted, until


async def _commit_toggles(settings: Settings, race_id: str, by: str, count: int) -> None:
    """`count` events (pause, resume, pause, ...) on a running race, in one append: the room
    broadcasts each of them when it catches up with its stream."""
    engine = create_engine(settings.database_url)
    store = EventStore(engine)
    stream = f"race-{race_id}"
    try:
        state, version = await load_state(store, stream, races)
        now, events = datetime.now(UTC), []
        for i in range(count):
            command = races.Pause(by) if i % 2 == 0 else races.Resume(by)
            for evt in races.decide(state, command, now):
                state = races.evolve(state, evt)
                events.append(evt)
        await store.append(stream, version, [NewEvent.of(e) for e in events])
    finally:
        await engine.dispose()


async def _send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(frame).decode())


def _numbered(frame: dict[str, Any]) -> bool:
    return frame["type"] in ("event", "countdown", "welcome")


async def test_resume_replays_inside_the_history_and_snapshots_beyond_it(
    live: LiveServer, world: World
) -> None:
    organiser, watcher, away = await world.users(3)
    race_id = await world.race(organiser, [], 500.0, gun=time.time() - 20)
    watch, first = await join(live, race_id, world.tokens[watcher])
    start, epoch = first["seq"], first["epoch"]
    count = HISTORY + 10  # even: the race ends up running again
    await _commit_toggles(live.settings, race_id, organiser, count)
    current = start + count
    seen: list[int] = []
    async with asyncio.timeout(30):  # the room catches up (every 2 s) and numbers them all
        while not seen or seen[-1] < current:
            frame = await recv(watch)
            if frame["type"] == "event":
                seen.append(frame["seq"])
    assert seen == list(range(start + 1, current + 1))

    ws, welcome = await join(live, race_id, world.tokens[away])
    assert (welcome["seq"], welcome["epoch"]) == (current, epoch)
    # the oldest seq the history still holds: a resume just after it replays all of it, in order
    oldest = current - HISTORY + 1
    await _send(ws, {"type": "resume", "after_seq": oldest - 1, "epoch": epoch})
    replayed: list[int] = []
    async with asyncio.timeout(30):
        while not replayed or replayed[-1] < current:
            frame = await until(ws, _numbered)
            assert frame["type"] == "event", frame  # a replay, not a snapshot
            replayed.append(frame["seq"])
    assert replayed == list(range(oldest, current + 1))

    # one further back (and the client's own last seq, long gone): a fresh snapshot instead
    for after_seq in (oldest - 2, start):
        await _send(ws, {"type": "resume", "after_seq": after_seq, "epoch": epoch})
        fresh = await until(ws, _numbered)
        assert fresh["type"] == "welcome", fresh
        assert (fresh["seq"], fresh["epoch"]) == (current, epoch)
        assert fresh["snapshot"]["race"]["status"] == "running"
    for sock in (watch, ws):
        await sock.close()


#: Resumes the slow socket asks for at once (under the rate limit's burst of 40, with the two
#: controls after them): each replays the whole history, megabytes in all, far more than the
#: server's send buffer (server/rooms/ws.py: 32 KiB) and the client's small receive buffer hold.
REPLAYS = 30


async def test_a_socket_that_lags_gets_the_latest_standings_not_each_one_it_missed(
    live: LiveServer, world: World
) -> None:
    runner, watcher = await world.users(2)
    (moderator,) = await world.users(1, "moderator")
    probe = generate(Profile.HONEST_RECREATIONAL, 7, 0.0, 10_000.0)
    gun = time.time() - float(probe.t[-1] - probe.t[0]) - 10.0  # every fix is in the past
    race_id = await world.race(moderator, [runner], 10_000.0, gun=gun)
    fast, first = await join(live, race_id, world.tokens[watcher])
    await _commit_toggles(live.settings, race_id, moderator, HISTORY)  # a full history
    await until(fast, lambda f: f.get("seq") == first["seq"] + HISTORY, 30)

    # a runner on the move: the room sends standings every tick (4 a second)
    running, _ = await join(live, race_id, world.tokens[runner])

    async def run() -> None:
        for frame in gps_frames(shifted(probe, gun + 0.5)):
            await _send(running, frame)
            await asyncio.sleep(0.1)

    async def drain() -> None:  # the runner reads what it gets (acks, standings)
        with contextlib.suppress(Exception):
            while True:
                await running.recv()

    tasks = [asyncio.create_task(run()), asyncio.create_task(drain())]
    try:
        before = await until(fast, lambda f: f["type"] == "standings")
        await until(fast, lambda f: f["type"] == "standings" and f["tick"] > before["tick"])

        # a moderator's phone that reads nothing for a while: small buffers, a backlog of
        # replays, then a pause and a resume, the marker after which every standings counts
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", live.port))
        sock.setblocking(False)
        slow = await connect(f"{live.ws_url}/{race_id}", sock=sock, max_queue=1, compression=None)
        await _send(slow, {"type": "auth", "token": world.tokens[moderator]})
        for _ in range(REPLAYS):
            await _send(slow, {"type": "resume", "after_seq": 0})
        for action in ("pause", "resume"):
            await _send(slow, {"type": "control", "action": action})

        marker = await until(fast, lambda f: f.get("event") == "resumed")
        after = marker["seq"]  # standings with as_of_seq >= after came after the marker
        since = await until(fast, lambda f: f["type"] == "standings" and f["as_of_seq"] >= after)
        t0 = since["tick"]
        # five standings frames the slow socket has not taken: about a second and a half of
        # lag in all, well inside the 5 s (MAX_LAG_S) after which it would be closed with 1013
        last = t0 + 4
        await until(fast, lambda f: f["type"] == "standings" and f["tick"] >= last)

        # now it reads: its backlog, then standings; every one from t0 to `last` reached its
        # queue while it lagged, and each newer one replaced the older
        events = 0
        got: list[int] = []
        async with asyncio.timeout(60):
            while True:
                frame = await recv(slow, 30)
                if frame["type"] == "event":
                    events += 1
                elif frame["type"] == "standings" and frame["as_of_seq"] >= after:
                    got.append(frame["tick"])
                    if frame["tick"] > last:
                        break
        assert events >= REPLAYS * HISTORY  # the backlog it had to read first
        assert got == sorted(got) and len(set(got)) == len(got)
        lagged = [t for t in got if t <= last]
        assert len(lagged) <= 1, (t0, last, got)  # not the 5 or more it missed
        # still connected (no 1013): it answers a ping
        await _send(slow, {"type": "ping", "t0": time.time()})
        await until(slow, lambda f: f["type"] == "pong")
        assert slow.close_code is None
        await slow.close()
    finally:
        for task in tasks:
            task.cancel()
        for ws in (fast, running):
            await ws.close()
