"""A coordination drill through the SDK against a real server: phones on skewed clocks sync
(`ping`/`pong` + `sync`), fire cues at `cue.at` converted to their own clock, ack with their own
tap times and a balance hold's steadiness; bad acks are refused; the results come in the room and
over REST.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from clients.sdk import FrameRefused, RetroRunClient, RoomClosed, RoomConnection
from tests.clients.conftest import LiveServer
from tests.clients.helpers import moderator, signed_in

#: A balance hold first (steadiness), then a switch-reaction phase with scored cues.
PHASES = [
    {"move": "balance_hold", "duration_s": 5, "prompt": "left leg"},
    {"move": "switch_reaction", "duration_s": 6, "switch_cues": 2},
]
#: Each phone's clock is off by this much; its reaction time in seconds; its steadiness.
PHONES = {"ann": (2.0, 0.30, 0.9), "bob": (-1.5, 0.45, 0.6)}


def _skewed(skew: float) -> Any:
    return lambda: time.time() + skew


async def _participate(room: RoomConnection, reaction_s: float, steadiness: float) -> list[Any]:
    """Play the drill like a phone: each cue fires at its `at` on this phone's clock; scored
    cues are tapped `reaction_s` later, the hold reports its steadiness. Returns the answers."""
    answers: list[Any] = []

    async def react(cue: dict[str, Any]) -> None:
        if cue["scored"]:
            tap = room.local_time(cue["at"]) + reaction_s  # the phone's own clock
            await room.sleep_until(cue["at"] + reaction_s)
            answers.append(await room.ack(cue, at=tap))
        elif cue["move"] == "balance_hold":
            await room.sleep_until(cue["at"] + 1.0)
            answers.append(await room.ack(cue, at=room.now(), steadiness=steadiness))

    tasks = []
    try:
        async for frame in room:
            if frame["type"] == "cue":
                tasks.append(asyncio.create_task(react(frame)))
    except RoomClosed as closed:
        answers.append(closed)
    await asyncio.gather(*tasks)
    return answers


async def test_skewed_phones_ack_on_their_own_clocks_and_get_scored(
    live_server: LiveServer,
) -> None:
    base = live_server.base_url
    coach = await moderator(base, live_server.settings)
    apis = {name: await signed_in(base, name) for name in PHONES}
    late = await signed_in(base, "late")
    drill = await coach.create_drill(title="SDK switch drill", level="beginner", phases=PHASES)
    assert drill["status"] == "scheduled" and drill["room"] == f"/ws/rooms/{drill['id']}"
    rooms = {
        name: api.room(drill["id"], clock=_skewed(PHONES[name][0])) for name, api in apis.items()
    }
    unsynced = late.room(drill["id"], sync_samples=0)
    ids = {name: (await api.me())["id"] for name, api in apis.items()}
    late_id = (await late.me())["id"]
    async with coach, late, coach.room(drill["id"]) as host, unsynced:
        for api in apis.values():
            await api.__aenter__()
        for room in rooms.values():
            await room.connect()  # ... and 5 clock exchanges, reported with `sync`
        assert host.is_drill and host.role == "coach" and host.may_control
        for name, room in rooms.items():
            assert room.role == "participant" and room.room_clock is not None
            assert room.room_clock["samples"] == 5
            # the room's offset (server - phone) is the phone's skew, to within the round trip
            assert room.offset_s == pytest.approx(-PHONES[name][0], abs=0.05)
            assert room.server_now() == pytest.approx(time.time(), abs=0.05)

        with pytest.raises(FrameRefused) as forbidden:
            await rooms["ann"].start(3)
        assert forbidden.value.code == "forbidden"
        started = await host.start(3)
        assert started["event"] == "started" and started["scored_cues"] >= 2
        plays = {
            name: asyncio.create_task(_participate(rooms[name], *PHONES[name][1:]))
            for name in PHONES
        }

        # the third phone never synced its clock: its ack is refused until it does
        first_scored = await unsynced.wait_for(lambda f: f.get("type") == "cue" and f["scored"], 30)
        await unsynced.sleep_until(first_scored["at"] - 0.6)
        with pytest.raises(FrameRefused) as unsynced_ack:
            await unsynced.ack(first_scored)
        assert unsynced_ack.value.code == "clock_unsynced"
        await unsynced.sync_clock(3)
        assert unsynced.room_clock is not None and unsynced.room_clock["samples"] == 3
        await unsynced.sleep_until(first_scored["at"] - 0.3)
        with pytest.raises(FrameRefused) as early:  # the cue had not fired yet at that time
            await unsynced.ack(first_scored, at=unsynced.local_time(first_scored["at"]) - 0.4)
        assert early.value.code == "ack_early"
        await unsynced.sleep_until(first_scored["at"] + 0.2)
        first = await unsynced.ack(first_scored, at=unsynced.local_time(first_scored["at"]) + 0.2)
        assert first["reaction_ms"] == pytest.approx(200, abs=25)
        with pytest.raises(FrameRefused) as again:
            await unsynced.ack(first_scored)
        assert again.value.code == "ack_duplicate"

        answers = {name: await asyncio.wait_for(task, 60) for name, task in plays.items()}
        results = host.results
        with pytest.raises(RoomClosed):
            async with asyncio.timeout(20):
                async for _frame in host:
                    pass
        assert host.close_code == 4504 and host.over
        stored = await coach.drill(drill["id"])  # the same results over REST

    scored = started["scored_cues"]
    for name, got in answers.items():
        *acks, closed = got
        assert isinstance(closed, RoomClosed) and closed.code == 4504
        reactions = [a["reaction_ms"] for a in acks if a["reaction_ms"] is not None]
        holds = [a["steadiness"] for a in acks if a["steadiness"] is not None]
        assert len(reactions) == scored and holds == [PHONES[name][2]]
        # judged on the room's offset for this phone, the phone's skew cancels out
        assert all(r == pytest.approx(PHONES[name][1] * 1000, abs=25) for r in reactions)
        assert rooms[name].results is not None

    assert isinstance(results, dict) and results["type"] == "drill_results"
    by_id = {s["participant_id"]: s for s in results["scores"]}
    for name, pid in ids.items():
        assert by_id[pid]["hits"] == scored and by_id[pid]["misses"] == 0
        assert by_id[pid]["steadiness"] == pytest.approx(PHONES[name][2])
    assert by_id[ids["ann"]]["median_ms"] < by_id[ids["bob"]]["median_ms"]
    assert by_id[late_id]["hits"] == 1 and by_id[late_id]["misses"] == scored - 1
    assert 0.0 <= results["sync_score"] <= 1.0

    assert stored["status"] == "finished"
    assert {s["participant_id"]: s["hits"] for s in stored["scores"]} == {
        pid: s["hits"] for pid, s in by_id.items()
    }
    assert stored["sync_score"] == pytest.approx(results["sync_score"])
    for room in rooms.values():
        await room.close()
    for api in apis.values():
        await api.aclose()


async def test_a_drill_coach_may_finish_early_and_late_joiners_get_the_results(
    live_server: LiveServer,
) -> None:
    coach = await moderator(live_server.base_url, live_server.settings)
    runner: RetroRunClient = await signed_in(live_server.base_url, "latecomer")
    drill = await coach.create_drill(title="SDK short drill", level="beginner", phases=PHASES)
    async with coach, runner, coach.room(drill["id"]) as host:
        await host.start(30)
        results = await host.finish()
        assert results["type"] == "drill_results" and results["drill_id"] == drill["id"]
        late = runner.room(drill["id"])
        with pytest.raises(RoomClosed) as closed:
            await late.connect()
            async with asyncio.timeout(20):
                async for _frame in late:
                    pass
        assert closed.value.code == 4504 and late.reconnects == 0
        assert late.welcome is not None and late.results is not None
        await late.close()
