"""`RoomConnection` against a scripted room that speaks docs/protocol.md on a loopback port.

The scripted room lets each test break things on purpose (lose an ack, restart, drop a
broadcast, change the epoch, ban) and checks what the client does about it. The same client
against the real room is tested in test_sdk.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from clients.sdk import (
    RoomClosed,
    RoomConnection,
    RoomUnavailable,
    should_reconnect,
)

Frame = dict[str, Any]
TOKEN = "good-token"


class ScriptedRoom:
    """A minimal room: auth, welcome, ping/pong, gps + ack (idempotent by seq), resume, control."""

    def __init__(self, skew_s: float = 0.0) -> None:
        self.skew_s = skew_s
        self.epoch = "e1"
        self.seq = 0
        self.history: list[Frame] = []
        self.clients: set[ServerConnection] = set()
        self.connections = 0
        self.applied: Counter[int] = Counter()  # how often each fix seq was applied
        self.received: list[tuple[int, int]] = []  # (connection, seq) of every gps frame
        self.resumes: list[Frame] = []
        self.controls: list[Frame] = []
        self.lose_ack_and_restart_at: int | None = None  # store this fix, then close 1012
        self.ban_on_connect = False
        self.close_after_welcome: set[int] = set()  # these connections: welcome, then 1012
        self.server: Server | None = None

    def now(self) -> float:
        return time.time() + self.skew_s

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        number = self.connections
        auth = json.loads(await ws.recv())
        if auth != {"type": "auth", "token": TOKEN}:
            await ws.close(4401, "bad token")
            return
        if self.ban_on_connect:
            await ws.close(4503, "banned")
            return
        await ws.send(json.dumps(self._welcome()))
        if number in self.close_after_welcome:  # the room moved again at once
            await ws.close(1012, "moving")
            return
        self.clients.add(ws)
        try:
            async for raw in ws:
                await self._on(ws, json.loads(raw), number)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)

    def _welcome(self) -> Frame:
        return {
            "type": "welcome",
            "room": "r1",
            "role": "runner",
            "you": "runner-1",
            "snapshot": {"race": {"status": "running"}, "standings": []},
            "seq": self.seq,
            "epoch": self.epoch,
            "server_time": self.now(),
        }

    async def _on(self, ws: ServerConnection, f: Frame, number: int) -> None:
        kind = f["type"]
        if kind == "ping":
            t1 = self.now()
            pong = {"type": "pong", "t0": f["t0"], "t1": t1, "t2": self.now()}
            if "cid" in f:
                pong["cid"] = f["cid"]
            await ws.send(json.dumps(pong))
        elif kind == "gps":
            seq = f["seq"]
            assert set(f) <= {"type", "seq", "t", "lat", "lon", "acc", "heading", "speed"}
            self.received.append((number, seq))
            if seq not in self.applied:
                self.applied[seq] += 1
            if seq == self.lose_ack_and_restart_at:
                self.lose_ack_and_restart_at = None
                await self.broadcast({"type": "event", "event": "paused"}, lose=True)
                await ws.close(1012, "restarting")
                return
            await ws.send(json.dumps({"type": "ack", "seq": seq}))
        elif kind == "resume":
            self.resumes.append(f)
            if f.get("epoch") != self.epoch or f["after_seq"] < self.seq - len(self.history):
                await ws.send(json.dumps(self._welcome()))
                return
            for frame in self.history:
                if frame["seq"] > f["after_seq"]:
                    await ws.send(json.dumps(frame))
        elif kind == "control":
            self.controls.append(f)
            await self.broadcast({"type": "countdown", "start_at": self.now() + 10})
        else:
            await ws.send(json.dumps({"type": "error", "code": "invalid_frame", "ref": kind}))

    async def broadcast(self, frame: Frame, *, lose: bool = False) -> Frame:
        """Number and record a broadcast; with `lose`, nobody receives it (a lost frame)."""
        self.seq += 1
        out = {**frame, "seq": self.seq, "epoch": self.epoch}
        self.history.append(out)
        if not lose:
            for ws in list(self.clients):
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(json.dumps(out))
        return out

    def url(self) -> str:
        assert self.server is not None
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/ws/rooms/r1"


@pytest.fixture
async def room() -> AsyncIterator[ScriptedRoom]:
    scripted = ScriptedRoom(skew_s=120.0)
    async with serve(scripted.handler, "127.0.0.1", 0) as server:
        scripted.server = server
        yield scripted


def _client(room: ScriptedRoom, **options: Any) -> RoomConnection:
    defaults: dict[str, Any] = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "max_reconnects": 5}
    return RoomConnection(room.url(), TOKEN, **{**defaults, **options})


async def _until(check: Callable[[], bool], what: str) -> None:
    """Wait (bounded) for a condition the background tasks bring about."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _fix(i: int) -> Frame:
    return {"t": 1_700_000_000.0 + i, "lat": 52.5 + i * 1e-5, "lon": 13.4, "acc": 5.0}


def test_close_codes_split_into_reconnect_and_do_not() -> None:
    # 1012 (restart, room moved) and 1013 (slow consumer) invite the client back, then resume
    assert all(should_reconnect(c) for c in (1001, 1006, 1011, 1012, 1013, 4000, 4401, 4499))
    # normal, policy (auth), too large, room over, banned, share link revoked: never again
    assert not any(should_reconnect(c) for c in (1000, 1008, 1009, 4500, 4503, 4504, 4511, 4999))


async def test_welcome_then_clock_sync_finds_the_server_offset(room: ScriptedRoom) -> None:
    async with _client(room) as conn:
        assert conn.welcome is not None and conn.role == "runner" and conn.you == "runner-1"
        assert (conn.seq, conn.epoch) == (0, "e1")
        first = await conn.recv(5)
        assert first["type"] == "welcome"
        assert conn.offset_s is not None and abs(conn.offset_s - 120.0) < 1.0
        assert len(conn.clock.samples) == 5
        assert abs(conn.server_now() - (time.time() + 120.0)) < 1.0


async def test_fixes_are_numbered_and_forgotten_once_acked(room: ScriptedRoom) -> None:
    async with _client(room, sync_samples=0) as conn:
        seqs = [await conn.send_gps(_fix(i)) for i in range(10)]
        assert seqs == list(range(1, 11))
        await _until(lambda: not conn.unacked, "acks")
        assert conn.acked_count == 10
        assert room.applied == Counter(range(1, 11))
        with pytest.raises(ValueError):
            await conn.send_gps({**_fix(11), "altitude": 3.0})  # not in the protocol


async def test_reconnect_resends_unacked_fixes_and_resumes_missed_broadcasts(
    room: ScriptedRoom,
) -> None:
    async with _client(room, sync_samples=0) as conn:
        assert (await conn.recv(5))["type"] == "welcome"
        await room.broadcast({"type": "standings", "leaders": []})
        assert (await conn.recv(5))["seq"] == 1
        room.lose_ack_and_restart_at = 4  # fix 4 is stored but its ack never leaves
        for i in range(3):
            await conn.send_gps(_fix(i))
        await _until(lambda: conn.acked_count == 3, "the first acks")
        await conn.send_gps(_fix(3))
        # the room broadcast `paused` while restarting, and the client missed it
        for i in range(4, 8):  # sent during the outage or just after: none may be lost
            await conn.send_gps(_fix(i))
        await _until(lambda: conn.reconnects == 1 and not conn.unacked, "resent fixes acked")
        assert room.applied == Counter(range(1, 9))  # each fix applied exactly once
        again = [seq for number, seq in room.received if number == 2]
        assert again[0] == 4 and again == sorted(again)  # fix 4 resent first, then in order
        assert [seq for _, seq in room.received].count(4) == 2
        assert room.resumes and room.resumes[0] == {"type": "resume", "after_seq": 1, "epoch": "e1"}
        missed = await conn.recv(5)
        assert (missed["type"], missed["seq"], missed["event"]) == ("event", 2, "paused")
        await room.broadcast({"type": "standings", "leaders": []})
        assert (await conn.recv(5))["seq"] == 3


async def test_a_close_right_after_the_welcome_of_a_reconnect_reconnects_again(
    room: ScriptedRoom,
) -> None:
    """Found under load (a room taken over twice in a row after Redis restarted): the resend
    that follows a reconnect's welcome hit a socket already closed with 1012, and the SDK ended
    the connection with `ConnectionClosed` instead of reconnecting once more."""
    room.lose_ack_and_restart_at = 3
    room.close_after_welcome = {2}
    async with _client(room, sync_samples=0) as conn:
        for i in range(6):
            await conn.send_gps(_fix(i))
        await _until(lambda: room.connections >= 3 and conn.connected, "the second reconnect")
        await _until(lambda: not conn.unacked, "every fix acked")
        assert conn.reconnects == 2
        assert room.applied == Counter(range(1, 7))  # nothing lost, nothing applied twice
        await conn.send_gps(_fix(6))
        await _until(lambda: not conn.unacked, "a fix after it")


async def test_a_dropped_socket_reconnects_by_itself(room: ScriptedRoom) -> None:
    async with _client(room, sync_samples=0) as conn:
        conn.abort_transport()  # a network failure: close code 1006 on the client's side
        await _until(lambda: conn.reconnects == 1 and conn.connected, "the reconnect")
        assert room.connections == 2
        await conn.send_gps(_fix(0))
        await _until(lambda: not conn.unacked, "the ack after reconnecting")


async def test_a_gap_asks_for_a_resume_and_frames_arrive_in_order_once(
    room: ScriptedRoom,
) -> None:
    async with _client(room, sync_samples=0) as conn:
        assert (await conn.recv(5))["type"] == "welcome"
        await room.broadcast({"type": "standings", "n": 1})
        await room.broadcast({"type": "standings", "n": 2}, lose=True)
        await room.broadcast({"type": "standings", "n": 3})
        got = [await conn.recv(5) for _ in range(3)]
        assert [f["seq"] for f in got] == [1, 2, 3]
        assert [f["n"] for f in got] == [1, 2, 3]
        assert conn.gaps_seen == 1 and room.resumes == [
            {"type": "resume", "after_seq": 1, "epoch": "e1"}
        ]
        await room.broadcast({"type": "standings", "n": 4})
        assert (await conn.recv(5))["n"] == 4


async def test_a_new_epoch_brings_a_fresh_snapshot(room: ScriptedRoom) -> None:
    async with _client(room, sync_samples=0) as conn:
        assert (await conn.recv(5))["type"] == "welcome"
        room.epoch, room.history, room.seq = "e2", [], 40  # the server lost the history
        await room.broadcast({"type": "standings"})
        fresh = await conn.recv(5)
        assert fresh["type"] == "welcome" and fresh["epoch"] == "e2"
        assert (conn.epoch, conn.seq) == ("e2", 41)
        await room.broadcast({"type": "standings"})
        assert (await conn.recv(5))["seq"] == 42


async def test_no_reconnect_after_a_do_not_reconnect_close(room: ScriptedRoom) -> None:
    async with _client(room, sync_samples=0) as conn:
        room.ban_on_connect = True
        for ws in list(room.clients):
            await ws.close(4503, "banned")
        with pytest.raises(RoomClosed) as closed:
            async with asyncio.timeout(5):
                async for _frame in conn:
                    pass
        assert closed.value.code == 4503
        with pytest.raises(RoomClosed):
            await conn.send_gps(_fix(0))
        assert room.connections == 1 and conn.reconnects == 0


async def test_a_bad_token_is_refused_on_connect(room: ScriptedRoom) -> None:
    conn = RoomConnection(room.url(), "stale-token")
    with pytest.raises(RoomClosed) as closed:
        await conn.connect()
    assert closed.value.code == 4401 and should_reconnect(closed.value.code)
    await conn.close()


async def test_reconnecting_gives_up_after_bounded_tries(room: ScriptedRoom) -> None:
    conn = _client(room, sync_samples=0, max_reconnects=3)
    await conn.connect()
    assert room.server is not None
    room.server.close(close_connections=False)  # nobody listens any more
    conn.abort_transport()  # and the connection is lost: every reconnect fails
    with pytest.raises(RoomUnavailable):
        async with asyncio.timeout(10):
            async for _frame in conn:
                pass
    assert room.connections == 1
    await conn.close()


async def test_moderator_control_returns_the_broadcast(room: ScriptedRoom) -> None:
    async with _client(room, sync_samples=0) as conn:
        frame = await conn.control("start", countdown_s=10, timeout_s=5)
        assert frame is not None and frame["type"] == "countdown"
        assert room.controls[0]["action"] == "start" and room.controls[0]["countdown_s"] == 10
        assert str(room.controls[0]["cid"]).startswith("c")
