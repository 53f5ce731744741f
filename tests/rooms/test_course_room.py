"""Course races, retiring, the cutoff, edits and live signs of a cheat, through the room."""

from __future__ import annotations

import asyncio
import math
import time
from itertools import pairwise
from typing import Any

import numpy as np
import orjson
import pytest

from game import races
from game.course import Course
from game.generate import Profile, generate
from game.track import EARTH_RADIUS_M
from tests.rooms.conftest import LiveServer, World, gps_frames, join, send_paced, shifted, until

M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0
LAT0, LON0 = 52.0, 13.0
KX = M_PER_DEG * math.cos(math.radians(LAT0))


def point(east_m: float, north_m: float) -> tuple[float, float]:
    return LAT0 + north_m / M_PER_DEG, LON0 + east_m / KX


def frames_along(
    legs: list[tuple[float, float]], start_t: float, seed: int
) -> list[dict[str, Any]]:
    """gps frames of a runner along straight `legs` (metres) at 3 m/s, one a second."""
    rng = np.random.default_rng(seed)
    pts = [legs[0]]
    for (ax, ay), (bx, by) in pairwise(legs):
        n = max(1, round(math.hypot(bx - ax, by - ay) / 3.0))
        pts += [(ax + (bx - ax) * k / n, ay + (by - ay) * k / n) for k in range(1, n + 1)]
    out = []
    for i, (x, y) in enumerate(pts):
        lat, lon = point(x + rng.normal(0, 1.5), y + rng.normal(0, 1.5))
        out.append(
            {"type": "gps", "seq": i + 1, "t": start_t + i, "lat": lat, "lon": lon, "acc": 5.0}
        )
    return out


async def _send(ws: Any, frame: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(frame).decode())


async def test_a_course_race_credits_the_line_and_closes_once_everyone_is_done(
    live: LiveServer, world: World
) -> None:
    follower, cutter, quitter = await world.users(3)
    (moderator,) = await world.users(1, "moderator")
    line = Course.of([point(0, 0), point(0, 120), point(100, 120)], 20.0)
    gun = round(time.time() - 120.0, 3)
    race_id = await world.race(moderator, [follower, cutter, quitter], 200.0, gun=gun, course=line)
    mod, welcome = await join(live, race_id, world.tokens[moderator])
    assert welcome["snapshot"]["race"]["course"] == {"tolerance_m": 20.0, "length_m": 220.0}
    # the runners read nothing but their error: closing is not a handshake to wait 10 s for
    sockets = {
        r: (await join(live, race_id, world.tokens[r], close_timeout=0.5))[0]
        for r in (follower, cutter)
    }
    quits, _ = await join(live, race_id, world.tokens[quitter], close_timeout=0.5)

    cut = frames_along([(0, 0), (0, 30), (100, 120)], gun + 1.0, seed=2)  # across the corner
    await asyncio.gather(
        send_paced(
            sockets[follower], frames_along([(0, 0), (0, 120), (110, 120)], gun + 1, 1), 45.0
        ),
        send_paced(sockets[cutter], cut, 45.0),
        send_paced(quits, frames_along([(0, 0), (0, 40)], gun + 1.0, seed=3), 45.0),
    )
    flag = await until(mod, lambda f: f.get("event") == "flag" and f["code"] == "off_course")
    assert flag["runner_id"] == cutter and flag["hard_fail"] is False
    assert flag["evidence"]["off_m"] > 20.0
    await until(mod, lambda f: f.get("event") == "runner_finished")
    await _send(quits, {"type": "retire", "cid": "r1"})
    retired = await until(mod, lambda f: f.get("event") == "retired")
    assert retired["runner_id"] == quitter
    await _send(quits, {"type": "retire", "cid": "r2"})  # once only
    again = await until(quits, lambda f: f["type"] == "error")
    assert (again["code"], again["ref"]) == ("already_retired", "r2")
    late = {"type": "gps", "seq": 999, "t": time.time(), "lat": LAT0, "lon": LON0, "cid": "g1"}
    await _send(quits, late)  # no more fixes once retired
    refused = await until(quits, lambda f: f["type"] == "error")
    assert (refused["code"], refused["ref"]) == ("retired", "g1")
    reason = {"runner_id": cutter, "reason": "cut the corner", "cid": "d1"}
    await _send(mod, {"type": "control", "action": "disqualify", **reason})
    closed = await until(mod, lambda f: f.get("event") == "closed")  # all done: it closes
    results = {r["runner_id"]: r for r in closed["results"]}
    assert results[follower]["place"] == 1 and results[follower]["status"] == "finished"
    assert results[follower]["time_s"] == pytest.approx(200.0 / 3.0, abs=4.0)
    assert (results[quitter]["status"], results[cutter]["status"]) == ("dnf", "dq")
    for ws in (mod, quits, *sockets.values()):
        await ws.close()


async def test_the_cutoff_closes_the_race_and_runners_out_are_dnf(
    live: LiveServer, world: World
) -> None:
    runner, finisher = await world.users(2)
    (moderator,) = await world.users(1, "moderator")
    gun = round(time.time() - 58.0, 3)
    race_id = await world.race(moderator, [runner, finisher], 2000.0, gun=gun, cutoff_s=60.0)
    mod, welcome = await join(live, race_id, world.tokens[moderator])
    assert welcome["snapshot"]["race"]["cutoff_at"] == gun + 60.0
    closed = await until(mod, lambda f: f.get("event") == "closed", timeout=20.0)
    assert {r["status"] for r in closed["results"]} == {"dnf"}
    await mod.close()


async def test_a_bike_below_every_hard_limit_is_flagged_live_as_too_fast(
    live: LiveServer, world: World
) -> None:
    biker, honest = await world.users(2)
    (moderator,) = await world.users(1, "moderator")
    probe = generate(Profile.BIKE, 4, 0.0, 1500.0)
    gun = round(time.time() - float(probe.t[-1] - probe.t[0]) - 5.0, 3)
    track = shifted(probe, gun + 0.5)
    race_id = await world.race(moderator, [biker, honest], 5000.0, gun=gun)
    mod, _ = await join(live, race_id, world.tokens[moderator])
    ws, _ = await join(live, race_id, world.tokens[biker], close_timeout=0.5)
    sender = asyncio.create_task(send_paced(ws, gps_frames(track, 200), per_s=45.0))
    fast = ("fast_pace", "superhuman_speed", "vehicle_speed", "jump")
    flag = await until(mod, lambda f: f.get("event") == "flag" and f["code"] in fast, 30.0)
    assert flag["runner_id"] == biker and flag["code"] == "fast_pace", flag
    assert flag["hard_fail"] is False and flag["evidence"]["speed_mps"] > 4.0
    await sender
    for sock in (mod, ws):
        await sock.close()


async def test_an_edit_over_rest_reaches_the_lobby_as_an_event(
    live: LiveServer, world: World
) -> None:
    (organiser,) = await world.users(1, "moderator")
    (fan,) = await world.users(1)
    race_id = await world.race(organiser, [], 1000.0)
    ws, welcome = await join(live, race_id, world.tokens[fan])
    assert welcome["snapshot"]["race"]["title"] == "Room test"
    await world.command(race_id, races.EditRace(organiser, title="Room test, moved", capacity=40))
    edited = await until(ws, lambda f: f.get("event") == "edited")
    assert edited["changes"] == {"title": "Room test, moved", "capacity": 40}
    assert "seq" in edited  # numbered, like every race event
    await ws.close()
