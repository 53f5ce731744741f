"""Room frames go out one of two ways (server/rooms/direct.py): written at once to uvicorn's
websockets-sansio transport, or through ASGI when that is impossible (another protocol
implementation, a negotiated compression extension, a paused transport). Clients must not be
able to tell: same frames, same order, no gaps, nothing twice."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from game.generate import Profile, generate
from server.ws_protocol import LeanWebSocketProtocol
from tests.rooms.conftest import (
    LiveServer,
    World,
    gps_frames,
    recv,
    room_settings,
    send_paced,
    shifted,
    start_server,
)

FIXES = 8


#: The protocol `retrorun serve` runs, uvicorn's own it derives from, and another one.
PROTOCOLS = {"lean": LeanWebSocketProtocol, "sansio": "websockets-sansio", "wsproto": "wsproto"}


@pytest.fixture(scope="module", params=list(PROTOCOLS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    db = tmp_path_factory.mktemp(f"paths-{request.param}") / "rooms.db"
    srv = start_server(room_settings(db), ws=PROTOCOLS[request.param])
    try:
        yield srv
    finally:
        srv.stop()


def _sent(srv: LiveServer) -> dict[str, float]:
    text = httpx.get(f"{srv.http_url}/metrics", timeout=10).text
    found = re.findall(r'^retrorun_ws_frames_sent_total\{path="(\w+)"\} (\S+)$', text, re.M)
    return {path: float(n) for path, n in found}


async def _join(srv: LiveServer, race_id: str, token: str, compression: str | None) -> Any:
    ws = await connect(f"{srv.ws_url}/{race_id}", compression=compression)
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_both_send_paths_deliver_the_same_numbered_stream(
    server: LiveServer, compression: str | None
) -> None:
    world = World(server.settings)
    runners = await world.users(2)
    spectator, organiser = await world.users(2)
    gun = round(time.time() - 60.0, 3)
    tracks = {
        rid: shifted(generate(Profile.HONEST_TRAINED, 7 + i, 0.0, 300.0), gun + 0.5)
        for i, rid in enumerate(runners)
    }
    race_id = await world.race(organiser, runners, 5000.0, gun=gun)
    before = _sent(server)

    watch, welcome = await _join(server, race_id, world.tokens[spectator], compression)
    seq = welcome["seq"]
    moving: set[str] = set()
    ticks: list[int] = []

    async def spectate() -> None:
        nonlocal seq
        async with asyncio.timeout(30):
            while moving != set(runners):
                frame = await recv(watch)
                if frame["type"] == "standings":
                    ticks.append(frame["tick"])
                    moving.update(r["runner_id"] for r in frame["leaders"] if r["distance_m"] > 0)
                elif "seq" in frame:
                    assert frame["seq"] == seq + 1, (frame, seq)  # no gap, nothing twice
                    seq = frame["seq"]

    async def run(rid: str) -> dict[str, Any]:
        ws, _ = await _join(server, race_id, world.tokens[rid], compression)
        frames = gps_frames(tracks[rid], FIXES)
        assert len(frames) == FIXES
        sender = asyncio.create_task(send_paced(ws, frames))
        acked: set[int] = set()
        you: dict[str, Any] = {}
        async with asyncio.timeout(30):
            while len(acked) < FIXES or not you:
                frame = await recv(ws)
                assert frame["type"] != "error", frame
                if frame["type"] == "ack":
                    acked.add(frame["seq"])
                elif frame["type"] == "standings" and frame.get("you", {}).get("distance_m", 0):
                    you = frame["you"]
        await sender
        await ws.close()
        assert acked == set(range(1, FIXES + 1))
        return you

    watcher = asyncio.create_task(spectate())
    yours = await asyncio.gather(*(run(rid) for rid in runners))
    await watcher
    await watch.close()

    assert ticks == sorted(set(ticks))  # standings in order, none repeated
    assert {y["runner_id"] for y in yours} == set(runners)
    assert all(y["distance_m"] > 0 for y in yours)
    after = _sent(server)
    direct = after.get("direct", 0.0) - before.get("direct", 0.0)
    through_asgi = after.get("asgi", 0.0) - before.get("asgi", 0.0)
    if compression is None and _is_sansio(server):
        assert direct > 0 and through_asgi == 0, (direct, through_asgi)
    else:  # wsproto, or a compressed socket: every frame through ASGI
        assert direct == 0 and through_asgi > 0, (direct, through_asgi)


def _is_sansio(srv: LiveServer) -> bool:
    return srv.server.config.ws in ("websockets-sansio", LeanWebSocketProtocol)
