"""The WebSocket protocol `retrorun serve` runs (server/ws_protocol.py): uvicorn's sans-I/O
protocol with a one-consumer inbox, no handshake kept once the socket is open, and every
socket's keepalive on one timer."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator

import orjson
import pytest

from server import ws_protocol
from server.rooms.connection import Connection
from server.ws_protocol import Flag, Inbox, LeanWebSocketProtocol
from tests.rooms.conftest import LiveServer, World, join, recv, room_settings, start_server


async def test_the_inbox_hands_items_out_in_order() -> None:
    inbox = Inbox()
    assert inbox.empty()
    for item in ("a", "b", "c"):
        inbox.put_nowait(item)
    assert not inbox.empty()
    assert [await inbox.get() for _ in range(3)] == ["a", "b", "c"]
    assert inbox.empty()


async def test_a_waiting_get_takes_the_next_put() -> None:
    inbox = Inbox()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("first")
    inbox.put_nowait("second")
    assert await getter == "first"
    assert await inbox.get() == "second"


async def test_an_item_handed_to_a_get_cancelled_before_it_ran_is_kept() -> None:
    """`asyncio.wait_for(receive(), ...)` may cancel a get that was already handed an item
    (the auth timeout does): the item must stay first in line, not vanish."""
    inbox = Inbox()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("handed over")
    getter.cancel()  # before the getter ran again
    inbox.put_nowait("later")
    with contextlib.suppress(asyncio.CancelledError):
        await getter
    assert [await inbox.get(), await inbox.get()] == ["handed over", "later"]


async def test_a_cancelled_wait_leaves_the_inbox_usable() -> None:
    inbox = Inbox()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(inbox.get(), 0.01)
    inbox.put_nowait("x")
    assert await asyncio.wait_for(inbox.get(), 1.0) == "x"


async def test_a_flag_wakes_every_waiter_once_set() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert flag.is_set() and await flag.wait()
    flag.clear()
    late = asyncio.create_task(flag.wait())
    await asyncio.sleep(0.01)
    assert not late.done()
    late.cancel()  # a cancelled waiter leaves nothing behind
    with contextlib.suppress(asyncio.CancelledError):
        await late
    flag.set()
    assert flag.is_set()


async def test_an_open_room_socket_keeps_no_handshake_and_still_talks(
    live: LiveServer, world: World
) -> None:
    (mod,) = await world.users(1, "moderator")
    race_id = await world.race(mod, [], 400.0)
    ws, _ = await join(live, race_id, world.tokens[mod])
    try:
        protos = [
            c
            for c in live.server.server_state.connections
            if isinstance(c, LeanWebSocketProtocol) and c.handshake_complete
        ]
        assert protos, "the test server runs the lean protocol"
        assert all(p.response is None and p.request is None for p in protos)
        assert all(isinstance(p.queue, Inbox) and isinstance(p.writable, Flag) for p in protos)
        # the room read Origin and the lifespan state, then let go of the handshake's parts
        assert all(not p.scope["headers"] and not p.scope["state"] for p in protos)
        assert all(not p.scope["extensions"] and not p.scope["subprotocols"] for p in protos)
        # every attribute uvicorn set went to a slot: no instance dict of its own (~1.5 KiB)
        assert [vars(p) for p in protos] == [{} for _ in protos]
        # nor has the room's own per-socket object one
        conns = [o for o in gc.get_objects() if type(o) is Connection]  # (no weak proxies)
        assert conns and not any(hasattr(c, "__dict__") for c in conns)
        await ws.send(orjson.dumps({"type": "ping", "t0": time.time(), "cid": "p1"}).decode())
        pong = await recv(ws)
        assert pong["type"] == "pong" and pong["cid"] == "p1"
    finally:
        await ws.close()


# keepalive: every socket on one timer (server/ws_protocol.py::Keepalive)

_HANDSHAKE = (
    "GET /ws/rooms/keepalive HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


async def _raw_frames(port: int, seconds: float) -> list[tuple[int, bytes]]:
    """A peer that opens a socket and then only reads: the (opcode, payload) of each frame the
    server sends within `seconds`, up to its close frame. It answers no ping."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frames: list[tuple[int, bytes]] = []
    try:
        writer.write(_HANDSHAKE.encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        async with asyncio.timeout(seconds):
            while True:
                b0, b1 = await reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(await reader.readexactly(2), "big")
                payload = await reader.readexactly(n)
                frames.append((b0 & 0x0F, payload))
                if b0 & 0x0F == 0x8:
                    return frames
    except TimeoutError:
        return frames
    finally:
        writer.close()


@pytest.fixture(scope="module")
def brisk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A room server pinging every 0.3 s and waiting 0.3 s for the pong."""
    settings = room_settings(tmp_path_factory.mktemp("keepalive") / "rooms.db")
    srv = start_server(settings, ws_ping_interval=0.3, ws_ping_timeout=0.3)
    try:
        yield srv
    finally:
        srv.stop()


async def test_a_peer_that_answers_no_ping_is_closed_1011(brisk: LiveServer) -> None:
    frames = await _raw_frames(brisk.port, 4.0)  # the room's auth deadline (5 s) comes later
    kinds = [op for op, _ in frames]
    assert kinds[0] == 0x9, kinds  # a ping first, then no pong: the close
    assert kinds[-1] == 0x8, kinds
    assert int.from_bytes(frames[-1][1][:2], "big") == 1011


async def test_peers_that_answer_stay_open_and_the_queues_empty_once_they_go(
    brisk: LiveServer,
) -> None:
    world = World(brisk.settings)
    (mod,) = await world.users(1, "moderator")
    race_id = await world.race(mod, [], 400.0)
    sockets = [(await join(brisk, race_id, world.tokens[mod]))[0] for _ in range(3)]
    try:
        protos = [
            c
            for c in brisk.server.server_state.connections
            if isinstance(c, LeanWebSocketProtocol) and c.handshake_complete
        ]
        assert len(protos) == 3
        await asyncio.sleep(1.0)
        first = [p.ping_sent_at for p in protos]
        await asyncio.sleep(1.0)
        # a ping is sent only once the one before was answered (a pong timeout is set)
        assert all(0 < a < p.ping_sent_at for a, p in zip(first, protos, strict=True))
        assert all(p.ping_timer is None and p.pong_timer is None for p in protos)
        for k, ws in enumerate(sockets):
            await ws.send(
                orjson.dumps({"type": "ping", "t0": time.time(), "cid": f"k{k}"}).decode()
            )
            assert (await recv(ws))["cid"] == f"k{k}"
        wheel = next(iter(ws_protocol._WHEELS[protos[0].loop].values()))
    finally:
        for ws in sockets:
            await ws.close()
    deadline = time.monotonic() + 5.0
    while len(wheel) and time.monotonic() < deadline:  # stale entries are dropped as they come due
        await asyncio.sleep(0.1)
    assert len(wheel) == 0
