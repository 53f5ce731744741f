"""Refused frames get an `error` frame (the socket stays open) or a documented close code."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.rooms.conftest import GOOD_ORIGIN, LiveServer, World, join, recv, until


async def _closed_with(ws: object, timeout: float = 10.0) -> int:
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()  # type: ignore[attr-defined]
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return int(exc.rcvd.code)


async def test_bad_frames_get_errors_and_the_socket_survives(
    live: LiveServer, world: World
) -> None:
    runner, spectator, organiser = await world.users(3)
    race_id = await world.race(organiser, [runner], 500.0, gun=time.time() - 30)
    ws, _ = await join(live, race_id, world.tokens[runner])
    fix = {"type": "gps", "seq": 1, "t": time.time() - 5, "lat": 52.5, "lon": 13.4}
    cases = [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"type": "teleport"}', "unknown_type"),
        ('{"type": "control", "action": "fly"}', "unknown_type"),
        (orjson.dumps({**fix, "speed_kmh": 3, "cid": "x1"}).decode(), "invalid_frame"),
        ('{"type": "ping", "t0": NaN}', "invalid_json"),
        ('{"type": "ping", "t0": 1e400}', "invalid_json"),
        (orjson.dumps(fix).decode().replace('"seq":1', '"seq":' + "9" * 30), "invalid_frame"),
        (orjson.dumps({**fix, "lat": 91.0}).decode(), "invalid_frame"),
        (orjson.dumps({**fix, "seq": 1.5}).decode(), "invalid_frame"),
        (b"\x00\x01binary", "binary_frame"),
        ('{"type": "auth", "token": "again"}', "already_authenticated"),
        ('{"type": "control", "action": "pause", "cid": "p1"}', "forbidden"),
    ]
    for raw, code in cases:
        await ws.send(raw)
        frame = await until(ws, lambda f: f["type"] == "error")
        assert frame["code"] == code, (raw, frame)
        assert set(frame) == {"type", "code", "message", "ref"}
    # still open and working: a good fix is acked, a ping is answered
    await ws.send(orjson.dumps({**fix, "cid": "f1"}).decode())
    ack = await until(ws, lambda f: f["type"] == "ack")
    assert ack == {"type": "ack", "seq": 1, "cid": "f1"}
    await ws.send(orjson.dumps({"type": "ping", "t0": 123.0, "cid": "k"}).decode())
    pong = await until(ws, lambda f: f["type"] == "pong")
    assert pong["t0"] == 123.0 and pong["cid"] == "k" and pong["t1"] <= pong["t2"]
    # a spectator may not send fixes, a runner may not control: both refused, both stay
    spec, _ = await join(live, race_id, world.tokens[spectator])
    await spec.send(orjson.dumps({**fix, "cid": "s1"}).decode())
    refused = await until(spec, lambda f: f["type"] == "error")
    assert refused["code"] == "not_registered" and refused["ref"] == "s1"
    await spec.send(orjson.dumps({"type": "control", "action": "abort", "reason": "x"}).decode())
    assert (await until(spec, lambda f: f["type"] == "error"))["code"] == "forbidden"
    # too large: 1009
    await ws.send(orjson.dumps({"type": "ping", "t0": 1.0, "cid": "x" * 17_000}).decode())
    assert await _closed_with(ws) == 1009
    await spec.close()


async def test_sign_in_failures_close_with_documented_codes(live: LiveServer, world: World) -> None:
    runner, organiser = await world.users(2)
    (banned,) = await world.users(1, banned=True)
    race_id = await world.race(organiser, [runner], 500.0)
    url = f"{live.ws_url}/{race_id}"

    async def attempt(first: str | bytes | None, room: str = url) -> int:
        async with connect(room, compression=None) as ws:
            if first is not None:
                await ws.send(first)
            return await _closed_with(ws)

    results = await asyncio.gather(
        attempt(None),  # no auth within 5 s
        attempt('{"type": "ping", "t0": 1}'),
        attempt(b"binary"),
        attempt('{"type": "auth", "token": "forged"}'),
        attempt(orjson.dumps({"type": "auth", "token": world.tokens[banned]}).decode()),
        attempt(
            orjson.dumps({"type": "auth", "token": world.tokens[runner]}).decode(),
            f"{live.ws_url}/no-such-race",
        ),
    )
    assert results == [1008, 1008, 1008, 4401, 4503, 4404]
    with pytest.raises(InvalidStatus):  # a foreign page may not open the room
        await connect(url, origin="http://evil.example")  # type: ignore[arg-type]
    ws, welcome = await join(live, race_id, world.tokens[organiser], origin=GOOD_ORIGIN)
    assert welcome["control"] is True and welcome["role"] == "moderator"  # the organiser
    await ws.close()


async def test_a_flood_is_rate_limited_then_closed(live: LiveServer, world: World) -> None:
    (runner,) = await world.users(1)
    race_id = await world.race(runner, [runner], 500.0)
    ws, _ = await join(live, race_id, world.tokens[runner])
    for _ in range(60):
        await ws.send('{"type": "ping", "t0": 1}')
    codes = []
    async with asyncio.timeout(10):
        while len(codes) < 60:
            frame = await recv(ws)
            codes.append(frame.get("code", frame["type"]))
    assert codes.count("pong") >= 40 and "rate_limited" in codes
    for _ in range(200):
        await ws.send('{"type": "ping", "t0": 1}')
    assert await _closed_with(ws) == 4429


async def test_a_frame_naming_gps_only_in_its_cid_spends_the_general_budget(
    live: LiveServer, world: World
) -> None:
    runner, organiser = await world.users(2)
    race_id = await world.race(organiser, [runner], 500.0, gun=time.time() - 30)
    ws, _ = await join(live, race_id, world.tokens[runner])
    ping = orjson.dumps({"type": "ping", "t0": 1.0, "cid": "gps"}).decode()
    assert '"gps"' in ping
    for _ in range(60):  # over the general burst (40), far under the GPS one (1,200)
        await ws.send(ping)
    codes: list[str] = []
    async with asyncio.timeout(10):
        while len(codes) < 60:
            frame = await recv(ws)
            if frame["type"] in ("pong", "error"):  # not the race's standings
                codes.append(frame.get("code", frame["type"]))
    assert "rate_limited" in codes and 40 <= codes.count("pong") < 60, codes
    # a real fix spends its own budget: taken although the general one is spent
    fix = {"type": "gps", "seq": 1, "t": time.time() - 5, "lat": 52.5, "lon": 13.4, "cid": "f1"}
    await ws.send(orjson.dumps(fix).decode())
    answer = await until(ws, lambda f: f["type"] in ("ack", "error"))
    assert answer == {"type": "ack", "seq": 1, "cid": "f1"}
    await ws.close()


async def test_an_account_holds_a_bounded_number_of_sockets_and_a_closed_one_frees_its_slot(
    live: LiveServer, world: World
) -> None:
    runner, other, organiser = await world.users(3)
    race_id = await world.race(organiser, [runner], 500.0)
    cap = live.settings.ws_max_sockets_per_account
    held = [(await join(live, race_id, world.tokens[runner]))[0] for _ in range(cap)]
    async with connect(f"{live.ws_url}/{race_id}", compression=None) as extra:
        await extra.send(orjson.dumps({"type": "auth", "token": world.tokens[runner]}).decode())
        refused = await recv(extra)
        assert refused["type"] == "error" and refused["code"] == "too_many_sockets"
        assert await _closed_with(extra) == 4408
    ws, welcome = await join(live, race_id, world.tokens[other])  # other accounts: unaffected
    assert welcome["you"] == other
    await ws.close()
    await held.pop().close()
    async with asyncio.timeout(10):  # the server notices the close and frees the slot
        while True:
            try:
                again, _ = await join(live, race_id, world.tokens[runner])
                break
            except AssertionError:  # refused: the slot is not free yet
                await asyncio.sleep(0.1)
    for sock in (again, *held):
        await sock.close()
