"""The SDK's reconnection against a real server: network faults through a loopback proxy
(stalled and cut connections) and a server that is down for longer than the old 16 s limit.

What is checked is what the server stored (its fix chunks) and what the SDK sent again: after a
reconnect nothing is lost, nothing is stored twice, and fixes the server already stored
(`welcome.acked_seq`) are not resent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clients.sdk import RetroRunClient, RoomClosed, RoomConnection, RoomUnavailable
from server.config import Settings
from tests.clients.conftest import (
    FaultProxy,
    LiveServer,
    sdk_settings,
    start_server,
    stored_fix_seqs,
)
from tests.clients.helpers import fix, moderator, race, signed_in, until, until_gun


def _through(
    proxy: FaultProxy, api: RetroRunClient, room_id: str, **options: object
) -> RoomConnection:
    assert api.token is not None
    return RoomConnection(proxy.url(f"/ws/rooms/{room_id}"), api.token, **options)  # type: ignore[arg-type]


async def _stored(settings: Settings, race_id: str, runner_id: str, upto: int) -> list[int]:
    """The stored seqs, once the server stored fix `upto` (bounded wait)."""
    seqs: list[int] = []
    async with asyncio.timeout(20):
        while not seqs or max(seqs) < upto:
            await asyncio.sleep(0.1)
            seqs = await stored_fix_seqs(settings, race_id, runner_id)
    return seqs


async def test_a_reconnect_mid_race_resends_only_what_the_server_did_not_store(
    live_server: LiveServer, proxy: FaultProxy
) -> None:
    mod = await moderator(live_server.base_url, live_server.settings)
    runner = await signed_in(live_server.base_url, "acked")
    race_id = await race(mod, runner)
    me = (await runner.me())["id"]
    room = _through(proxy, runner, race_id, liveness_timeout_s=None, backoff_base_s=0.05)
    async with mod, runner, mod.room(race_id) as control, room:
        gun = await until_gun(room, await control.start(3), after_s=5.0)
        for i in range(1, 6):
            await room.send_gps(fix(gun + 0.2 * i, i))
        await room.wait_acked(20)

        # the server hears fixes 6..15 and stores them, but its acks never reach the phone
        proxy.stall(up=False, down=True)
        for i in range(6, 16):
            await room.send_gps(fix(gun + 0.2 * i, i))
        assert max(await _stored(live_server.settings, race_id, me, 15)) == 15
        assert list(room.unacked) == list(range(6, 16))
        # then the uplink dies too: 16..20 never reach the server
        proxy.stall(up=True, down=True)
        for i in range(16, 21):
            await room.send_gps(fix(gun + 0.2 * i, i))
        proxy.cut()

        await room.wait_acked(30)
        assert room.reconnects == 1 and room.close_code == 1006
        assert room.server_acked_seq >= 15  # the welcome said 6..15 are stored
        assert room.resent == [16, 17, 18, 19, 20]  # only the rest, in order
        assert room.acked_count == 20
    stored = await _stored(live_server.settings, race_id, me, 20)
    assert sorted(stored) == list(range(1, 21))  # nothing lost, nothing stored twice


async def test_a_stalled_connection_is_detected_and_replaced(
    live_server: LiveServer, proxy: FaultProxy
) -> None:
    mod = await moderator(live_server.base_url, live_server.settings)
    runner = await signed_in(live_server.base_url, "stall")
    race_id = await race(mod, runner)
    me = (await runner.me())["id"]
    room = _through(
        proxy, runner, race_id, ping_interval_s=0.5, liveness_timeout_s=2.0, backoff_base_s=0.05
    )
    async with mod, runner, mod.room(race_id) as control, room:
        gun = await until_gun(room, await control.start(3), after_s=3.0)
        for i in range(1, 4):
            await room.send_gps(fix(gun + 0.2 * i, i))
        await room.wait_acked(20)
        # the network goes silent both ways; the socket stays open (no close, no reset)
        assert proxy.stall() == 1
        for i in range(4, 7):
            await room.send_gps(fix(gun + 0.2 * i, i))
        await until(lambda: room.reconnects == 1 and room.connected, "the replacement socket")
        assert room.stalls == 1 and proxy.accepted == 2
        await room.wait_acked(20)
        assert room.acked_count == 6
    assert sorted(await _stored(live_server.settings, race_id, me, 6)) == list(range(1, 7))


@pytest.mark.slow  # a real 20 s outage (~30 s): `pytest -m slow`; the policy is unit-tested
@pytest.mark.timeout(150)
async def test_reconnecting_outlasts_a_server_outage_longer_than_16_s(tmp_path: Path) -> None:
    srv = start_server(sdk_settings(tmp_path / "outage.db", room_tick_hz=4))
    port, settings = srv.port, srv.settings
    try:
        mod = await moderator(srv.base_url, settings)
        runner = await signed_in(srv.base_url, "outage")
        spectator = await signed_in(srv.base_url, "watch")
        race_id = await race(mod, runner)
        me = (await runner.me())["id"]
        fast = {"backoff_base_s": 0.1, "backoff_cap_s": 1.0, "ping_interval_s": 1.0}
        room = runner.room(race_id, **fast)
        watcher = spectator.room(race_id, **fast)
        async with mod, runner, spectator, mod.room(race_id, **fast) as control, room, watcher:
            countdown = await control.start(3)
            gun = await until_gun(room, countdown, after_s=3.0)
            epoch = room.epoch
            for i in range(1, 4):
                await room.send_gps(fix(gun + 0.2 * i, i))
            await room.wait_acked(20)

            await asyncio.to_thread(srv.stop)  # graceful: the room closes every socket (1012)
            await until(lambda: not room.connected, "the runner noticing the restart")
            assert room.close_code in (1012, 1006)
            for i in range(4, 7):  # recorded while the server is away: queued
                await room.send_gps(fix(gun + 0.2 * i, i))
            await asyncio.sleep(20.0)  # longer than the old give-up time (~16 s)
            assert not room.connected and not room.over and room.reconnect_attempts >= 10
            assert room.reconnects == 0 and not watcher.over

            srv = start_server(settings, port)  # back, same database, same port
            await room.wait_connected(30)
            await room.wait_acked(30)
            assert room.reconnects == 1 and room.acked_count == 6
            assert room.epoch != epoch  # a new process: the welcome was the new baseline
            await watcher.wait_connected(30)
            await control.wait_connected(30)

            # the room being over is final: everyone stops at once, nobody reconnects
            aborted = await control.abort("thunderstorm")
            assert aborted["event"] == "aborted" and aborted["reason"] == "thunderstorm"
            for conn in (room, watcher):
                with pytest.raises(RoomClosed) as closed:
                    async with asyncio.timeout(20):
                        async for _frame in conn:
                            pass
                assert closed.value.code == 4504 and conn.over
            attempts = room.reconnect_attempts
            await asyncio.sleep(1.5)
            assert room.reconnect_attempts == attempts and room.reconnects == 1
        assert sorted(await _stored(settings, race_id, me, 6)) == list(range(1, 7))
    finally:
        srv.stop()


async def test_terminal_close_codes_stop_reconnecting_at_once(live_server: LiveServer) -> None:
    mod = await moderator(live_server.base_url, live_server.settings)
    runner = await signed_in(live_server.base_url, "terminal")
    race_id = await race(mod, runner)
    url = runner.room_url(race_id)
    fast = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "sync_samples": 0}
    async with mod, runner:
        # an auth frame the server refuses (policy, 1008): retrying would repeat it
        policy = RoomConnection(url, "", **fast)
        with pytest.raises(RoomClosed) as refused:
            await policy.connect(retry=True)
        assert refused.value.code == 1008 and policy.reconnect_attempts == 1
        # a token the server refuses (4401), with no way to get a new one
        stale = RoomConnection(url, "not-a-token", **fast)
        with pytest.raises(RoomClosed) as rejected:
            await stale.connect(retry=True)
        assert rejected.value.code == 4401 and stale.reconnect_attempts == 1
        # no such room (4404) may exist later: that one is retried, within the limit set here
        missing = runner.room("no-such-race", max_reconnects=3, **fast)
        with pytest.raises(RoomUnavailable):
            await missing.connect(retry=True)
        assert missing.reconnect_attempts == 3 and missing.close_code == 4404
        for conn in (policy, stale, missing):
            await conn.close()
