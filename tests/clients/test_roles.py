"""Moderators, spectators and spotters through the SDK against a real server: race control over
`control` frames, and a spotter (paired account and share link) who gets and acknowledges a
safety alert."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from clients.sdk import FrameRefused, RetroRunClient, RoomClosed, RoomConnection
from tests.clients.conftest import LiveServer, sdk_settings, start_server
from tests.clients.helpers import fix, moderator, race, signed_in, until, until_gun

NO_PROGRESS_S = 3.0


async def _collect(room: RoomConnection, into: list[dict[str, Any]]) -> int | None:
    """Every frame delivered until the room ends; returns the final close code."""
    try:
        async for frame in room:
            into.append(frame)
    except RoomClosed as closed:
        return closed.code
    return None


async def test_a_moderator_runs_the_race_and_everyone_follows_it(live_server: LiveServer) -> None:
    base = live_server.base_url
    mod = await moderator(base, live_server.settings)
    ann = await signed_in(base, "ann")
    bob = await signed_in(base, "bob")
    fan = await signed_in(base, "fan")
    race_id = await race(mod, ann, bob)
    ann_id, bob_id = (await ann.me())["id"], (await bob.me())["id"]
    async with mod, ann, bob, fan:
        ctl, a, b, spec = (api.room(race_id) for api in (mod, ann, bob, fan))
        async with ctl, a, b, spec:
            assert (ctl.role, ctl.may_control) == ("moderator", True)
            assert (a.role, a.may_control) == ("runner", False)
            assert spec.role == "spectator"
            seen: list[dict[str, Any]] = []
            watching = asyncio.create_task(_collect(spec, seen))

            with pytest.raises(FrameRefused) as refused:  # runners do not run the race
                await a.start(3)
            assert refused.value.code == "forbidden"
            countdown = await ctl.start(3)
            assert countdown["type"] == "countdown" and 0 < countdown["countdown_s"] <= 3
            gun = await until_gun(a, countdown, after_s=1.0)
            for i in range(1, 4):
                await a.send_gps(fix(gun + 0.2 * i, i))
            await a.wait_acked(20)

            paused = await ctl.pause()
            assert paused["event"] == "paused"
            resumed = await ctl.resume_race()
            assert resumed["event"] == "resumed" and resumed["paused_s"] > 0
            with pytest.raises(FrameRefused) as twice:  # the race rules answer with a code
                await ctl.resume_race()
            assert twice.value.code == "bad_race_state"

            dq = await ctl.disqualify(bob_id, "cut the course")
            assert (dq["runner_id"], dq["reason"]) == (bob_id, "cut the course")
            told = asyncio.create_task(
                b.wait_for(lambda f: f.get("type") == "error" and f["code"] == "disqualified", 10)
            )
            await asyncio.sleep(0)  # the waiter is registered
            await b.send_gps(fix(gun + 1.0, 1))
            assert (await told)["code"] == "disqualified"

            closed = await ctl.finish()
            assert closed["event"] == "closed"
            rows = {r["runner_id"]: r for r in closed["results"]}
            assert rows[ann_id]["status"] == "dnf" and rows[bob_id]["status"] == "dq"
            assert ctl.results == closed["results"]
            assert await asyncio.wait_for(watching, 20) == 4504
            assert spec.over and spec.reconnects == 0

        events = [f.get("event", f["type"]) for f in seen if "seq" in f and f["type"] != "welcome"]
        assert events == ["countdown", "paused", "resumed", "disqualified", "closed"]
        seqs = [f["seq"] for f in seen if "seq" in f and f["type"] != "welcome"]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no repeat
        assert spec.results == closed["results"]
        final = await fan.race_results(race_id)
        assert final["status"] == "finished"
        assert {r["runner_id"]: r["status"] for r in final["results"]} == {
            ann_id: "dnf",
            bob_id: "dq",
        }


@pytest.fixture(scope="module")
def safe_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server that raises a no-progress alert after 3 s (instead of 60 s)."""
    db = tmp_path_factory.mktemp("spotters") / "spotters.db"
    srv = start_server(sdk_settings(db, safety_no_progress_s=NO_PROGRESS_S, room_tick_hz=4))
    try:
        yield LiveServer(srv.base_url, srv.settings)
    finally:
        srv.stop()


async def test_spotters_follow_a_runner_and_acknowledge_an_alert(safe_server: LiveServer) -> None:
    base = safe_server.base_url
    mod = await moderator(base, safe_server.settings)
    runner = await signed_in(base, "runner")
    spotter = await signed_in(base, "spotter")
    anonymous = RetroRunClient(base)  # the share link's holder has no account
    race_id = await race(mod, runner)
    runner_id, spotter_id = (await runner.me())["id"], (await spotter.me())["id"]
    async with mod, runner, spotter, anonymous:
        invited = await runner.invite_spotter((await spotter.me())["handle"])
        assert invited["status"] == "invited"
        accepted = await spotter.accept_spotter(runner_id)
        assert accepted["status"] == "accepted"
        assert [p["spotter_id"] for p in (await runner.spotters())["spotters"]] == [spotter_id]
        link = await runner.create_share_link("Mum", expires_in_s=3600)
        watch = await anonymous.watch(link["token"])
        assert watch["runner_id"] == runner_id and [r["id"] for r in watch["races"]] == [race_id]

        ctl, run, spot = mod.room(race_id), runner.room(race_id), spotter.room(race_id)
        follower = await anonymous.follow(link["token"])
        async with ctl, run, spot, follower:
            assert spot.role == "spotter" and spot.spotting == [runner_id]
            assert follower.role == "spotter" and follower.spotting == [runner_id]
            assert str(follower.you).startswith("link-") and not follower.may_control
            gun = await until_gun(run, await ctl.start(3), after_s=1.0)
            for i in range(1, 4):  # a few metres, then the runner stops moving
                await run.send_gps(fix(gun + 0.2 * i, i))
            await until(
                lambda: bool(spot.spotted) and spot.spotted[0].get("position") is not None,
                "the runner's position in the spotter's standings",
            )
            assert spot.spotted[0]["runner_id"] == runner_id
            assert spot.spotted[0]["position"]["lat"] == pytest.approx(fix(0, 3)["lat"])

            await until(lambda: bool(spot.alerts), "a no-progress alert", 30)
            (alert,) = spot.alerts.values()
            assert (alert["runner_id"], alert["kind"]) == (runner_id, "no_progress")
            for other in (follower, run, ctl):
                await until(lambda o=other: alert["id"] in o.alerts, "the alert everywhere")
            with pytest.raises(FrameRefused) as own:  # a runner cannot acknowledge their own
                await run.ack_alert(alert["id"])
            assert own.value.code == "forbidden"

            acked = await spot.ack_alert(alert["id"])
            assert (acked["by"], acked["role"]) == (spotter_id, "spotter")
            for room in (spot, follower, run, ctl):
                await until(lambda r=room: alert["id"] not in r.alerts, "the alert closed")
            with pytest.raises(FrameRefused) as closed:
                await ctl.ack_alert(alert["id"])
            assert closed.value.code == "alert_closed"

            # revoking the link ends the follower's room for good (4511), no reconnect
            ended = asyncio.create_task(_collect(follower, []))
            await runner.revoke_share_link(link["id"])
            assert await asyncio.wait_for(ended, 20) == 4511
            assert follower.reconnects == 0 and follower.over
            assert spot.connected and not spot.over
