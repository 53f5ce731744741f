"""Spotters and safety alerts in a live race room: real uvicorn server, real websockets clients.

Thresholds are shortened through Settings (a fall after 2 s stopped, a 3 s cancel window,
escalation after 4 s); the no-progress threshold keeps its 60 s, and a race whose fixes are older
than that shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from game.generate import Profile, generate
from game.safety import FallDetector, SafetyPolicy
from game.track import EARTH_RADIUS_M, Fix, Track
from tests.rooms.conftest import (
    LiveServer,
    World,
    gps_frames,
    join,
    recv,
    room_settings,
    send_paced,
    shifted,
    start_server,
    until,
)

FALL_S = 2.0
CANCEL_S = 3.0
ESCALATE_S = 4.0
M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0


@pytest.fixture(scope="module")
def safe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = room_settings(tmp_path_factory.mktemp("spotters") / "spotters.db")
    settings = settings.model_copy(
        update={
            "safety_fall_stopped_s": FALL_S,
            "safety_cancel_window_s": CANCEL_S,
            "safety_escalate_s": ESCALATE_S,
        }
    )
    srv = start_server(settings)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def world(safe: LiveServer) -> World:
    return World(safe.settings)


def _auth(world: World, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.tokens[user]}"}


async def _handle(http: httpx.AsyncClient, world: World, user: str) -> str:
    r = await http.get("/api/v1/me", headers=_auth(world, user))
    assert r.status_code == 200, r.text
    return str(r.json()["handle"])


async def _pair(srv: LiveServer, world: World, runner: str, spotter: str) -> None:
    """The runner invites the spotter by handle; the spotter accepts (the REST API)."""
    async with httpx.AsyncClient(base_url=srv.http_url) as http:
        handle = await _handle(http, world, spotter)
        r = await http.post(
            "/api/v1/spotters/invites", json={"handle": handle}, headers=_auth(world, runner)
        )
        assert r.status_code == 201, r.text
        r = await http.post(
            f"/api/v1/spotters/invites/{runner}/accept", headers=_auth(world, spotter)
        )
        assert r.status_code == 200 and r.json()["status"] == "accepted", r.text


async def _share_link(srv: LiveServer, world: World, runner: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=srv.http_url) as http:
        r = await http.post("/api/v1/spotters/links", json={}, headers=_auth(world, runner))
        assert r.status_code == 201, r.text
        link: dict[str, Any] = r.json()
        return link


async def _join_link(srv: LiveServer, race_id: str, token: str) -> ClientConnection:
    ws = await connect(f"{srv.ws_url}/{race_id}", compression=None)
    await ws.send(orjson.dumps({"type": "auth", "share_token": token}).decode())
    return ws


async def _closed_with(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, list[Any]]:
    """Read until the server closes the socket: (close code, the frames read before)."""
    seen: list[Any] = []
    async with asyncio.timeout(timeout):
        try:
            while True:
                seen.append(orjson.loads(await ws.recv()))
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd else None), seen


def _send(ws: ClientConnection, frame: dict[str, Any]) -> Any:
    return ws.send(orjson.dumps(frame).decode())


def _is_alert(kind: str) -> Any:
    return lambda f: f["type"] == "alert" and f["kind"] == kind


def _stopped(last: Fix, n: int, seq0: int) -> list[dict[str, Any]]:
    """`n` gps frames at the spot of `last`, one a second, the device reading ~0 m/s."""
    out = []
    for k in range(n):
        wobble = 0.3 * math.sin(k) / M_PER_DEG
        out.append(
            {
                "type": "gps",
                "seq": seq0 + k,
                "t": last.t + 1.0 + k,
                "lat": last.lat + wobble,
                "lon": last.lon,
                "acc": 4.0,
                "speed": 0.05 * (k % 2),
            }
        )
    return out


def _as_fix(frame: dict[str, Any]) -> Fix:
    return Fix(
        frame["t"], frame["lat"], frame["lon"], acc_m=frame.get("acc"), speed_mps=frame.get("speed")
    )


async def _drain(ws: ClientConnection, out: list[dict[str, Any]]) -> None:
    with contextlib.suppress(Exception):
        async for raw in ws:
            out.append(orjson.loads(raw))


async def test_a_fall_alerts_spotters_and_moderators_and_the_runner_cancels_it(
    safe: LiveServer, world: World
) -> None:
    runner, spotter, stranger = await world.users(3)
    (moderator,) = await world.users(1, "moderator")
    await _pair(safe, world, runner, spotter)
    link = await _share_link(safe, world, runner)

    # an honest run that ends a few seconds ago, then a sudden stop at the same spot
    # (short enough that no fix is a minute old: that would be a no-progress alert as well)
    probe = generate(Profile.HONEST_RECREATIONAL, 21, 0.0, 80.0)
    duration = float(probe.t[-1] - probe.t[0])
    gun = round(time.time() - duration - 8.0, 3)
    track: Track = shifted(probe, gun + 0.5)
    moving = gps_frames(track)
    stop = _stopped(track.fix(len(track) - 1), 6, len(moving) + 1)
    # the pure detector on the same fixes: nothing while running, a fall during the stop
    detector = FallDetector(SafetyPolicy(stopped_s=FALL_S))
    signals = [i for i, f in enumerate(moving + stop) for _ in detector.add(_as_fix(f))]
    assert signals and signals[0] >= len(moving)

    race_id = await world.race(moderator, [runner], 1000.0, gun=gun)
    mod, mod_welcome = await join(safe, race_id, world.tokens[moderator])
    spot, spot_welcome = await join(safe, race_id, world.tokens[spotter])
    other, other_welcome = await join(safe, race_id, world.tokens[stranger])
    linked = await _join_link(safe, race_id, link["token"])
    link_welcome = await recv(linked)
    assert mod_welcome["role"] == "moderator" and mod_welcome["snapshot"]["alerts"] == []
    assert spot_welcome["role"] == "spotter" and spot_welcome["spotting"] == [runner]
    assert link_welcome["type"] == "welcome" and link_welcome["role"] == "spotter"
    assert link_welcome["spotting"] == [runner] and link_welcome["control"] is False
    assert other_welcome["role"] == "spectator" and other_welcome["spotting"] == []
    assert "alerts" not in other_welcome["snapshot"]

    run, run_welcome = await join(safe, race_id, world.tokens[runner])
    assert run_welcome["role"] == "runner"
    await send_paced(run, moving + stop)

    # the spotter (account and share link), the moderator and the runner get the alert
    alert = await until(spot, _is_alert("fall"), 10.0)
    assert alert["runner_id"] == runner and alert["status"] == "open"
    assert alert["cancel_until"] == pytest.approx(alert["at"] + CANCEL_S, abs=0.01)
    assert alert["position"]["lat"] == pytest.approx(stop[0]["lat"], abs=1e-4)
    assert alert["evidence"]["from_mps"] >= 1.5
    assert (await until(mod, _is_alert("fall"), 10.0))["id"] == alert["id"]
    assert (await until(linked, _is_alert("fall"), 10.0))["id"] == alert["id"]
    mine = await until(run, _is_alert("fall"), 10.0)
    # the spotter's standings carry the runner's row and last position
    standings = await until(spot, lambda f: f["type"] == "standings" and f.get("spotted"))
    assert standings["spotted"][0]["runner_id"] == runner
    assert standings["spotted"][0]["position"] is not None

    # an unpaired account cannot acknowledge it (and never got it)
    await _send(other, {"type": "alert_ack", "id": alert["id"], "cid": "x1"})
    refused = await until(other, lambda f: f["type"] == "error")
    assert (refused["code"], refused["ref"]) == ("forbidden", "x1")

    # the runner cancels within the window: everyone who got the alert learns it
    await _send(run, {"type": "alert_cancel", "id": mine["id"]})
    for ws in (spot, mod, linked, run):
        done = await until(ws, lambda f: f["type"] == "alert_cancelled", 10.0)
        assert (done["id"], done["by"]) == (alert["id"], runner)

    events = await world.stream(race_id)
    assert not any(e.type.startswith("Alert") for e in events)  # not on the race stream
    for ws in (mod, spot, other, linked, run):
        await ws.close()
    stored = [
        e for e in await _stream(world, f"safety-{race_id}") if e.data["alert_id"] == mine["id"]
    ]
    assert [e.type for e in stored] == ["AlertRaised", "AlertCancelled"]
    assert stored[0].data["kind"] == "fall"
    assert "lat" not in orjson.dumps(stored[0].data).decode()  # no positions in the log


async def _stream(world: World, stream_id: str) -> list[Any]:
    from server.store.db import create_engine
    from server.store.event_store import EventStore

    engine = create_engine(world.settings.database_url)
    try:
        async with asyncio.timeout(10):
            while True:  # the room stores safety events just after sending them
                events = await EventStore(engine).load(stream_id)
                if any(e.type == "AlertCancelled" for e in events):
                    return events
                await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


async def test_no_progress_alert_a_late_cancel_is_refused_and_the_spotters_ack_reaches_moderators(
    safe: LiveServer, world: World
) -> None:
    runner, spotter = await world.users(2)
    (moderator,) = await world.users(1, "moderator")
    await _pair(safe, world, runner, spotter)
    # the runner's last progress was over a minute ago (the default 60 s no-progress threshold)
    probe = generate(Profile.HONEST_RECREATIONAL, 22, 0.0, 100.0)
    gun = round(time.time() - float(probe.t[-1] - probe.t[0]) - 75.0, 3)
    track = shifted(probe, gun + 0.5)
    race_id = await world.race(moderator, [runner], 1000.0, gun=gun)
    mod, _ = await join(safe, race_id, world.tokens[moderator])
    spot, _ = await join(safe, race_id, world.tokens[spotter])
    run, _ = await join(safe, race_id, world.tokens[runner])
    await send_paced(run, gps_frames(track, 20))

    alert = await until(spot, _is_alert("no_progress"), 10.0)
    assert alert["runner_id"] == runner and alert["evidence"]["duration_s"] > 60
    assert (await until(mod, _is_alert("no_progress"), 10.0))["id"] == alert["id"]

    # too late to cancel: refused with a code; the alert stays open
    run_frames: list[dict[str, Any]] = []
    while time.time() <= alert["cancel_until"] + 0.3:
        await asyncio.sleep(0.2)
    await _send(run, {"type": "alert_cancel", "id": alert["id"], "cid": "c1"})
    late = await until(run, lambda f: f["type"] == "error" and f["ref"] == "c1")
    assert late["code"] == "cancel_window_over"

    # nobody acknowledged it in time: it is escalated to the same people, once
    for ws in (spot, mod):
        escalated = await until(ws, lambda f: f["type"] == "alert_escalated", 10.0)
        assert escalated["id"] == alert["id"] and escalated["escalated"] is True

    # the spotter acknowledges: the moderator and the runner see who did
    await _send(spot, {"type": "alert_ack", "id": alert["id"]})
    for ws in (mod, run, spot):
        acked = await until(ws, lambda f: f["type"] == "alert_acked", 10.0)
        assert (acked["id"], acked["by"], acked["role"]) == (alert["id"], spotter, "spotter")
    await _send(mod, {"type": "alert_ack", "id": alert["id"], "cid": "m1"})
    again = await until(mod, lambda f: f["type"] == "error" and f["ref"] == "m1")
    assert again["code"] == "alert_closed"
    await _send(mod, {"type": "alert_ack", "id": "nope", "cid": "m2"})
    unknown = await until(mod, lambda f: f["type"] == "error" and f["ref"] == "m2")
    assert unknown["code"] == "unknown_alert"
    drainer = asyncio.create_task(_drain(run, run_frames))
    for ws in (mod, spot, run):
        await ws.close()
    await drainer


async def test_a_share_link_stops_working_once_revoked(safe: LiveServer, world: World) -> None:
    runner, other_runner, stranger = await world.users(3)
    (moderator,) = await world.users(1, "moderator")
    race_id = await world.race(moderator, [runner], 1000.0)
    link = await _share_link(safe, world, runner)
    token = link["token"]
    async with httpx.AsyncClient(base_url=safe.http_url) as http:
        # the link resolves to the runner's races (once the read model has the race)
        async with asyncio.timeout(10):
            while True:
                r = await http.get(f"/api/v1/spotters/watch/{token}")
                assert r.status_code == 200, r.text
                if [x["id"] for x in r.json()["races"]] == [race_id]:
                    break
                await asyncio.sleep(0.2)
        assert r.json()["runner_id"] == runner

        follower = await _join_link(safe, race_id, token)
        welcome = await recv(follower)
        assert welcome["role"] == "spotter" and welcome["spotting"] == [runner]
        # an unpaired account only spectates
        spectator, seen = await join(safe, race_id, world.tokens[stranger])
        assert seen["role"] == "spectator" and seen["spotting"] == []

        r = await http.delete(f"/api/v1/spotters/links/{link['id']}", headers=_auth(world, runner))
        assert r.status_code == 204, r.text
        code, frames = await _closed_with(follower)
        assert code == 4511
        assert any(f.get("code") == "share_link_revoked" for f in frames)

        again = await _join_link(safe, race_id, token)
        code, frames = await _closed_with(again)
        assert code == 4511 and frames[0]["code"] == "invalid_share_link"
        r = await http.get(f"/api/v1/spotters/watch/{token}")
        assert r.status_code == 404 and r.json()["code"] == "invalid_share_link"

    # a valid link of a runner who is not in this race follows nobody here
    elsewhere = await _share_link(safe, world, other_runner)
    ws = await _join_link(safe, race_id, elsewhere["token"])
    code, frames = await _closed_with(ws)
    assert code == 4403 and frames[-1]["code"] == "not_following"
    # exactly one of token and share_token
    ws = await connect(f"{safe.ws_url}/{race_id}", compression=None)
    await ws.send(orjson.dumps({"type": "auth", "token": "a", "share_token": token}).decode())
    code, frames = await _closed_with(ws)
    assert code == 1008 and frames[0]["code"] == "invalid_frame"
    await spectator.close()
