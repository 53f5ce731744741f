"""Slow and stalled clients against a real `retrorun serve` process on a loopback port.

HTTP (server/http_guard.py): a client trickling its request head (slowloris) or sending nothing
is disconnected once `RETRORUN_HEADER_TIMEOUT_S` passed, while normal clients are served
meanwhile; a head over `RETRORUN_HEADER_MAX_BYTES` gets 431; kept-alive connections and
WebSocket upgrades are not cut by the deadline.

WebSockets: a peer that stopped answering (a blackhole in the fault proxy) is pinged, closed
after `RETRORUN_WS_PING_INTERVAL_S` + `RETRORUN_WS_PING_TIMEOUT_S`, and its slot is freed.

No timing assertions: every wait is bounded and the outcome (closed or served, counts) is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.harness import ServerProcess, free_port, log_problems, make_race

HEADER_TIMEOUT_S = 1.0
PING_S = 1.0  # interval and timeout: a stalled socket is closed after about 2 s
HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
WS_GAUGE = "retrorun_ws_connections"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("slow-clients")
    server = ServerProcess(
        f"sqlite:///{tmp / 'slow.db'}",
        free_port(),
        tmp / "server.log",
        env={
            "RETRORUN_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "RETRORUN_WS_PING_INTERVAL_S": str(PING_S),
            "RETRORUN_WS_PING_TIMEOUT_S": str(PING_S),
        },
    )
    server.start()
    try:
        yield server
        assert not log_problems(server.log()), log_problems(server.log())[:20]
    finally:
        server.kill()


async def _open(srv: ServerProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", srv.port)


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length: (status, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v) for k, _, v in (x.partition(":") for x in lines[1:]) if k.lower() == "content-length"
    )
    return int(lines[0].split()[1]), await asyncio.wait_for(reader.readexactly(length), 10)


async def _closed_by_server(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """True when the server closed the connection (EOF or reset) within `timeout_s`."""
    try:
        while await asyncio.wait_for(reader.read(4096), timeout_s):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def _slowloris(srv: ServerProcess, stats: dict[str, int]) -> None:
    """Trickle a request head one byte every 0.1 s (never finishing within 40 bytes' time)."""
    reader, writer = await _open(srv)
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 200
    gone = asyncio.create_task(_closed_by_server(reader, 60))
    try:
        for i, byte in enumerate(head):
            if gone.done():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            stats["bytes"] += 1
            await asyncio.sleep(0.1)
            if i > 150:  # bounded: 15 s of trickling at most
                break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(gone), 10)
        stats["disconnected"] += int(gone.done() and gone.result())
    finally:
        gone.cancel()
        writer.transport.abort()


async def test_slowloris_clients_are_disconnected_while_others_are_served(
    srv: ServerProcess,
) -> None:
    sockets_before = srv.fd_kinds()["socket"]
    stats = {"bytes": 0, "disconnected": 0}
    attackers = [asyncio.create_task(_slowloris(srv, stats)) for _ in range(20)]
    served = attempts = 0
    async with httpx.AsyncClient(base_url=srv.http_url, timeout=10) as http:
        while not all(a.done() for a in attackers) and attempts < 200:
            attempts += 1
            served += (await http.get("/healthz")).status_code == 200
            await asyncio.sleep(0.1)
    await asyncio.gather(*attackers)
    assert stats["disconnected"] == 20, stats
    # each was cut off long before its head (~240 bytes) was complete
    assert stats["bytes"] < 20 * 150, stats
    assert attempts > 0 and served == attempts, (served, attempts)
    deadline = time.monotonic() + 10
    while srv.fd_kinds()["socket"] > sockets_before and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert srv.fd_kinds()["socket"] <= sockets_before


async def test_a_connection_that_sends_nothing_is_closed(srv: ServerProcess) -> None:
    reader, writer = await _open(srv)
    try:
        assert await _closed_by_server(reader, 15)
    finally:
        writer.transport.abort()


async def test_a_head_sent_in_pieces_within_the_deadline_is_served(srv: ServerProcess) -> None:
    reader, writer = await _open(srv)
    try:
        for piece in (HEAD[:7], HEAD[7:20], HEAD[20:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        assert (await _response(reader))[0] == 200
    finally:
        writer.transport.abort()


async def test_a_kept_alive_connection_idle_longer_than_the_head_deadline_is_served(
    srv: ServerProcess,
) -> None:
    """Idle time between requests is the keep-alive timeout's (5 s), not the head deadline's."""
    reader, writer = await _open(srv)
    try:
        writer.write(HEAD)
        assert (await _response(reader))[0] == 200
        await asyncio.sleep(HEADER_TIMEOUT_S * 2)
        writer.write(HEAD)
        assert (await _response(reader))[0] == 200
        # and the next request's head has the deadline again
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        assert await _closed_by_server(reader, 15)
    finally:
        writer.transport.abort()


async def test_a_request_head_over_the_cap_gets_431(srv: ServerProcess) -> None:
    reader, writer = await _open(srv)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40_000 + b"\r\n")
        await writer.drain()
        assert (await _response(reader))[0] == 431
        assert await _closed_by_server(reader, 10)
    finally:
        writer.transport.abort()


async def test_websockets_outlive_the_head_deadline(srv: ServerProcess) -> None:
    async with connect(f"{srv.ws_url}/no-such-room", open_timeout=10) as ws:
        await asyncio.sleep(HEADER_TIMEOUT_S * 2)  # past the head deadline: still open
        await ws.send(orjson.dumps({"type": "auth", "token": "not-a-token"}).decode())
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame["code"] == "invalid_token"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


# stalled WebSocket peers


async def _join(url: str, token: str) -> ClientConnection:
    # no client-side pings: only the server's keepalive may notice the stall
    ws = await connect(url, open_timeout=10, ping_interval=None, compression=None)
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    async with asyncio.timeout(10):
        while orjson.loads(await ws.recv())["type"] != "welcome":
            pass
    return ws


async def _drain(ws: ClientConnection, seen: list[str]) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            seen.append(orjson.loads(raw)["type"])


async def _gauge_until(srv: ServerProcess, want: float, timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    value = await asyncio.to_thread(srv.gauge, WS_GAUGE)
    while value != want and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        value = await asyncio.to_thread(srv.gauge, WS_GAUGE)
    return value


async def test_a_stalled_websocket_peer_is_closed_and_its_slot_freed(srv: ServerProcess) -> None:
    setup = await make_race(srv.database_url, n_runners=2, distance_m=150.0)
    stalled_id, healthy_id = setup.runners
    proxy = await FaultProxy("127.0.0.1", srv.port).start()
    healthy_frames: list[str] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        base = await _gauge_until(srv, 0.0, 10)
        assert base == 0.0
        stalled = await _join(
            f"ws://127.0.0.1:{proxy.port}/ws/rooms/{setup.race_id}",
            setup.world.tokens[stalled_id],
        )
        healthy = await _join(f"{srv.ws_url}/{setup.race_id}", setup.world.tokens[healthy_id])
        tasks.append(asyncio.create_task(_drain(healthy, healthy_frames)))
        assert await _gauge_until(srv, 2.0, 10) == 2.0

        proxy.pause()  # the stalled phone: no byte moves either way, the sockets stay open
        assert await _gauge_until(srv, 1.0, 20) == 1.0  # the server dropped it, only it
        await healthy.send(orjson.dumps({"type": "ping", "t0": time.time()}).decode())
        for _ in range(100):  # the healthy runner is still served
            if "pong" in healthy_frames:
                break
            await asyncio.sleep(0.1)
        assert "pong" in healthy_frames, healthy_frames

        proxy.resume()  # the network comes back: the old socket is gone, a new one works
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(10):
                async for _ in stalled:
                    pass
        again = await _join(
            f"ws://127.0.0.1:{proxy.port}/ws/rooms/{setup.race_id}",
            setup.world.tokens[stalled_id],
        )
        assert await _gauge_until(srv, 2.0, 10) == 2.0
        await again.close()
        await healthy.close()
        assert await _gauge_until(srv, 0.0, 10) == 0.0
    finally:
        for t in tasks:
            t.cancel()
        await proxy.stop()
