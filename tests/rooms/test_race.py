"""A whole live race through the room: 20 runners, spectators, a moderator, a car cheater."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import orjson

from game.generate import Profile, generate
from game.pace import Activity, check_track, policy_for
from game.track import Track
from server.tracks import stored_fix
from tests.rooms.conftest import (
    LiveServer,
    World,
    expected_finishes,
    gps_frames,
    join,
    recv,
    send_paced,
    shifted,
    until,
)

DISTANCE_M = 200.0


async def _collect(ws: Any, stop: Any, out: list[dict[str, Any]], timeout: float = 40.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws, timeout)
            out.append(frame)
            if stop(frame):
                return


def _assert_batch_verdicts(
    events: list[Any], tracks: dict[str, Track], crossing: dict[str, int]
) -> None:
    """Each finish's verdict, run by the room on the fixes it stored and read back, is the
    batch check on the fixes the runner sent up to the line (index `crossing[runner]`)."""
    finished = [e for e in events if e.type == "RunnerFinished"]
    assert finished
    policy = policy_for(Activity.RACE)
    for e in finished:
        rid = e.data["runner_id"]
        sent = [stored_fix(f) for f in tracks[rid].fixes()][: crossing[rid] + 1]
        batch = check_track(Track.from_fixes(sent), policy, now=time.time())
        assert (e.data["status"], e.data["score"]) == (batch.status, batch.score), rid
        assert e.data["codes"] == [f.code for f in batch.flags], rid


async def test_twenty_runners_finish_in_order_with_their_own_crossing_times(
    live: LiveServer, world: World
) -> None:
    runners = await world.users(20)
    spectators = await world.users(2)
    (moderator,) = await world.users(1, "moderator")
    probes = {
        rid: generate(
            (Profile.HONEST_RECREATIONAL, Profile.HONEST_TRAINED)[i % 2], 100 + i, 0.0, 330.0
        )
        for i, rid in enumerate(runners)
    }
    longest = max(float(t.t[-1] - t.t[0]) for t in probes.values())
    gun = round(time.time() - longest - 5.0, 3)
    tracks = {rid: shifted(t, gun + 0.5) for rid, t in probes.items()}
    expected = expected_finishes(tracks, DISTANCE_M, gun)
    assert len(expected) == 20
    race_id = await world.race(moderator, runners, DISTANCE_M, gun=gun)

    watchers = [await join(live, race_id, world.tokens[s]) for s in (*spectators, moderator)]
    assert all(w["role"] == "spectator" for _, w in watchers[:2])
    assert watchers[2][1]["role"] == "moderator" and watchers[2][1]["control"] is True
    seen: list[list[dict[str, Any]]] = [[], [], []]
    closed = lambda f: f.get("event") == "closed"  # noqa: E731
    collectors = [
        asyncio.create_task(_collect(ws, closed, seen[i])) for i, (ws, _) in enumerate(watchers)
    ]

    acked: dict[str, set[int]] = {}

    async def run(rid: str) -> None:
        ws, welcome = await join(live, race_id, world.tokens[rid])
        assert welcome["role"] == "runner" and welcome["you"] == rid
        frames = gps_frames(tracks[rid], expected[rid][0] + 1)
        sender = asyncio.create_task(send_paced(ws, frames))
        got: set[int] = set()
        async with asyncio.timeout(40):
            while len(got) < len(frames):
                frame = await recv(ws)
                if frame["type"] == "ack":
                    got.add(frame["seq"])
                if frame["type"] == "error":
                    raise AssertionError(frame)
        acked[rid] = got
        await sender
        await ws.close()

    await asyncio.gather(*(run(r) for r in runners))
    await asyncio.gather(*collectors)

    # every fix acked once stored
    for rid in runners:
        assert acked[rid] == set(range(1, expected[rid][0] + 2))
    # finish order and times: each runner's own crossing (pure engine on the same fixes)
    finished = [f for f in seen[0] if f.get("event") == "runner_finished"]
    assert {f["runner_id"] for f in finished} == set(runners)
    for f in finished:
        assert abs(f["time_s"] - expected[f["runner_id"]][1]) < 0.002, f
    results = next(f for f in seen[0] if f.get("event") == "closed")["results"]
    by_time = sorted(runners, key=lambda r: (round(expected[r][1], 3), r))
    assert [r["runner_id"] for r in results] == by_time
    assert [r["place"] for r in results] == list(range(1, 21))
    # spectators see the same numbered stream, without gaps
    for frames in seen:
        seqs = [f["seq"] for f in frames if f["type"] in ("event", "countdown") and "seq" in f]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert [f["seq"] for f in seen[0] if "seq" in f] == [f["seq"] for f in seen[1] if "seq" in f]
    standings = [f for f in seen[0] if f["type"] == "standings"]
    assert standings and standings[-1]["leaders"][0]["runner_id"] == by_time[0]
    assert "you" not in standings[-1]
    # the stream holds the published results
    events = await world.stream(race_id)
    _assert_batch_verdicts(events, tracks, {r: i for r, (i, _) in expected.items()})
    (final,) = [e for e in events if e.type == "RaceFinished"]
    assert [r["runner_id"] for r in final.data["results"]] == by_time
    async with httpx.AsyncClient(base_url=live.http_url) as http:
        r = await http.get(f"/api/v1/races/{race_id}/results")  # REST publishes the same
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "finished"
        assert [x["runner_id"] for x in body["results"]] == by_time
        assert [x["place"] for x in body["results"]] == list(range(1, len(by_time) + 1))
    for ws, _ in watchers:
        await ws.close()


async def test_a_car_is_flagged_live_to_the_moderator_and_not_ranked(
    live: LiveServer, world: World
) -> None:
    car, honest = await world.users(2)
    (moderator,) = await world.users(1, "moderator")
    (spectator,) = await world.users(1)
    probe = generate(Profile.CAR, 1, 0.0, 700.0)
    gun = round(time.time() - float(probe.t[-1] - probe.t[0]) - 5.0, 3)
    track = shifted(probe, gun + 0.5)
    crossing, _ = expected_finishes({car: track}, 700.0, gun)[car]
    race_id = await world.race(moderator, [car, honest], 700.0, gun=gun)
    mod, _ = await join(live, race_id, world.tokens[moderator])
    spec, _ = await join(live, race_id, world.tokens[spectator])
    runner, _ = await join(live, race_id, world.tokens[car])
    sender = asyncio.create_task(send_paced(runner, gps_frames(track, crossing + 2)))

    async def drain() -> None:  # the runner reads its acks
        with contextlib.suppress(Exception):
            async for _ in runner:
                pass

    drainer = asyncio.create_task(drain())

    mod_frames: list[dict[str, Any]] = []
    await _collect(mod, lambda f: f.get("event") == "runner_finished", mod_frames)
    flags = [f for f in mod_frames if f.get("event") == "flag" and f["hard_fail"]]
    assert flags and flags[0]["runner_id"] == car
    assert flags[0]["code"] in ("superhuman_speed", "vehicle_speed", "jump")
    first_flag = mod_frames.index(flags[0])
    finish = next(f for f in mod_frames if f.get("event") == "runner_finished")
    assert mod_frames.index(finish) > first_flag  # flagged live, before the line
    assert finish["status"] == "dq"
    await sender

    def car_row(frame: dict[str, Any]) -> dict[str, Any] | None:
        rows = frame.get("leaders", []) if frame["type"] == "standings" else []
        return next((r for r in rows if r["runner_id"] == car), None)

    spec_frames: list[dict[str, Any]] = []  # the next standings tick ranks the DQ last
    await _collect(spec, lambda f: (car_row(f) or {}).get("status") == "dq", spec_frames)
    assert car_row(spec_frames[-1]) == {**car_row(spec_frames[-1]), "status": "dq", "rank": 2}
    await mod.send(orjson.dumps({"type": "control", "action": "close", "cid": "c1"}).decode())
    await _collect(spec, lambda f: f.get("event") == "closed", spec_frames)
    assert not [f for f in spec_frames if f.get("event") == "flag"]  # moderators only
    results = {r["runner_id"]: r for r in spec_frames[-1]["results"]}
    assert results[car]["place"] is None and results[car]["status"] == "dq"
    assert results[honest]["status"] == "dnf"
    events = await world.stream(race_id)
    assert [e.data["status"] for e in events if e.type == "RunnerFinished"] == ["rejected"]
    _assert_batch_verdicts(events, {car: track}, {car: crossing})
    for ws in (mod, spec, runner):
        await ws.close()
    await drainer


async def test_a_runner_disqualified_in_the_lobby_stays_disqualified_once_the_race_starts(
    live: LiveServer, world: World
) -> None:
    cheat, honest = await world.users(2)
    (moderator,) = await world.users(1, "moderator")
    race_id = await world.race(moderator, [cheat, honest], 400.0)
    mod, welcome = await join(live, race_id, world.tokens[moderator])
    assert welcome["snapshot"]["race"]["status"] == "scheduled"  # the lobby
    (late,) = await world.users(1)
    await world.register(race_id, late)  # through the API: the room catches up and names them
    joined = await until(mod, lambda f: f.get("event") == "registered")
    assert joined["runner_id"] == late and joined["handle"] == f"u{late[:12]}"
    dq = {"type": "control", "action": "disqualify", "runner_id": cheat, "reason": "no chip"}
    await mod.send(orjson.dumps(dq).decode())
    await mod.send(orjson.dumps({"type": "control", "action": "start", "countdown_s": 3}).decode())

    def rows(frame: dict[str, Any]) -> dict[str, str]:
        if frame["type"] != "standings":
            return {}
        return {r["runner_id"]: r["status"] for r in frame["leaders"]}

    seen: list[dict[str, Any]] = []
    await _collect(mod, lambda f: len(rows(f)) == 3, seen, timeout=15.0)
    assert rows(seen[-1]) == {cheat: "dq", honest: "running", late: "running"}
    handles = {r["runner_id"]: r["handle"] for r in seen[-1]["leaders"]}
    assert handles == {rid: f"u{rid[:12]}" for rid in (cheat, honest, late)}  # screens show names
    numbered = [f.get("event", f["type"]) for f in seen if "seq" in f]
    assert numbered == ["disqualified", "countdown"]
    await mod.close()
