"""The WebSocket protocol `retrorun serve` runs (server/ws_protocol.py): uvicorn's sans-I/O
protocol with a one-consumer inbox and no handshake kept once the socket is open."""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson

from server.ws_protocol import Flag, Inbox, LeanWebSocketProtocol
from tests.rooms.conftest import LiveServer, World, join, recv


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
        assert all(not p.scope["headers"] for p in protos)  # the room read Origin, then let go
        await ws.send(orjson.dumps({"type": "ping", "t0": time.time(), "cid": "p1"}).decode())
        pong = await recv(ws)
        assert pong["type"] == "pong" and pong["cid"] == "p1"
    finally:
        await ws.close()
