"""Clients cut off from a running server through a loopback TCP fault proxy: a blackhole (the
sockets stall) and a cut (every connection aborted, new ones refused) for 5 s, 30 s and 120 s
(`slow`), with 2 runners and with 500 (`slow`). The server never stops; the SDK clients resume and
resend what was not acked."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.harness import (
    LARGE,
    CloseCodes,
    Load,
    ServerProcess,
    check,
    connect_all,
    first_acks_after,
    free_port,
    loads,
    log_problems,
    make_race,
    room_client,
    run_runner,
    wait_acked,
    windows_p99,
)

#: 6 fixes a second per runner: a 5 s outage queues 30 (the room used to allow bursts of 40)
SMALL = Load(2, 6.0, fault_after_s=2.0)


async def _outage(
    tmp_path: Path, mode: str, outage_s: float, load: Load = SMALL, max_reconnects: int = 40
) -> dict[str, Any]:
    srv = ServerProcess(
        f"sqlite:///{tmp_path / 'net.db'}",
        free_port(),
        tmp_path / "server.log",
        env=load.server_env,
    )
    await asyncio.to_thread(srv.start)
    proxy = await FaultProxy("127.0.0.1", srv.port).start()
    ws_url = f"ws://127.0.0.1:{proxy.port}/ws/rooms"
    figures: dict[str, Any] = {"mode": mode, "outage_s": outage_s, "runners": load.runners}
    figures["fixes_per_s"] = load.per_s
    try:
        setup = await make_race(
            srv.database_url, n_runners=load.runners, distance_m=load.distance_m
        )
        runners = {
            rid: room_client(
                ws_url,
                setup.race_id,
                setup.world.tokens[rid],
                f"runner{i}",
                max_reconnects=max_reconnects,
            )
            for i, rid in enumerate(setup.runners)
        }
        watcher = room_client(
            ws_url,
            setup.race_id,
            setup.world.tokens[setup.organiser],
            "mod",
            max_reconnects=max_reconnects,
        )
        recs = list(runners.values())
        with CloseCodes() as codes:
            await connect_all([*recs, watcher])
            senders = [
                asyncio.create_task(
                    run_runner(rec, setup.tracks[rid], setup.expected[rid][0] + 1, load.per_s)
                )
                for rid, rec in runners.items()
            ]
            await asyncio.sleep(load.fault_after_s)
            figures["acked_before_fault"] = sum(len(r.acked) for r in recs)
            figures["load_avg_at_fault"] = os.getloadavg()[0]
            racing = [
                r
                for r, task in zip(recs, senders, strict=True)
                if r.conn.unacked or not task.done()
            ]
            figures["racing_at_fault"] = len(racing)
            t_fault = time.monotonic()
            if mode == "blackhole":
                proxy.pause()
            else:
                proxy.refuse(True)
                figures["connections_cut"] = proxy.cut()
            await asyncio.sleep(outage_s)
            figures["unacked_at_heal"] = sum(len(r.conn.unacked) for r in recs)
            figures["server_ws_at_heal"] = await asyncio.to_thread(
                srv.gauge, "retrorun_ws_connections"
            )
            proxy.resume()
            proxy.refuse(False)
            t_heal = time.monotonic()
            deadline = t_heal + load.recover_s
            while (
                len(first_acks_after(racing, t_heal)) < len(racing) and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.05)
            after = first_acks_after(racing, t_heal)
            figures["recovered_runners"] = len(after)
            figures["recovery_s_after_heal"] = round(max(after, default=float("nan")), 2)
            t_calm = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*senders), 60 + outage_s + 3 * load.recover_s)
            figures["all_acked"] = await wait_acked(recs, load.settle_s)
            await asyncio.gather(*(r.wait_results(load.results_s) for r in [*recs, watcher]))
            figures["close_codes"] = dict(codes.codes)
            figures["load_avg_end"] = os.getloadavg()[0]
        before, during, later = windows_p99(recs, t_fault, t_calm)
        figures.update(p99_ack_s_before=before, p99_ack_s_recovery=during, p99_ack_s_after=later)
        figures["reconnects"] = sum(r.conn.reconnects for r in [*recs, watcher])
        figures["refused_while_cut"] = proxy.refused
        figures["client_errors"] = dict(Counter(e.get("code") for r in recs for e in r.errors))
        result = await check(srv.database_url, srv.http_url, setup, runners, [watcher])
        figures.update(result.figures)
        await asyncio.gather(*(rec.stop() for rec in [*recs, watcher]))
        print(f"\nFIGURES {figures}")
        if not figures["all_acked"]:
            print("UNACKED", {r.name: sorted(r.conn.unacked) for r in recs if r.conn.unacked})
        assert figures["all_acked"], figures
        assert not result.problems, result
        assert not log_problems(srv.log()), log_problems(srv.log())[:20]
        return figures
    finally:
        await proxy.stop()
        await asyncio.to_thread(srv.kill)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("load", loads(SMALL))
@pytest.mark.parametrize("mode", ["blackhole", "cut"])
async def test_clients_cut_off_for_5_s_lose_and_duplicate_nothing(
    tmp_path: Path, mode: str, load: Load
) -> None:
    await _outage(tmp_path, mode, 5.0, load)


# enough reconnect attempts to outlast the longer cuts (the SDK default, 8 with a cap of 8 s,
# gives up after ~16 s on average: see docs/reliability.md)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("load", [SMALL, LARGE], ids=lambda x: f"{x.runners}-runners")
@pytest.mark.parametrize("mode", ["blackhole", "cut"])
async def test_clients_cut_off_for_30_s_lose_and_duplicate_nothing(
    tmp_path: Path, mode: str, load: Load
) -> None:
    await _outage(tmp_path, mode, 30.0, load, max_reconnects=200)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("load", [SMALL, LARGE], ids=lambda x: f"{x.runners}-runners")
@pytest.mark.parametrize("mode", ["blackhole", "cut"])
async def test_clients_cut_off_for_120_s_lose_and_duplicate_nothing(
    tmp_path: Path, mode: str, load: Load
) -> None:
    await _outage(tmp_path, mode, 120.0, load, max_reconnects=1000)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_resend_burst_over_the_room_rate_limit_loses_no_fix(tmp_path: Path) -> None:
    """8 s cut at 6 fixes/s: ~50 queued fixes per runner are resent at once on reconnect."""
    await _outage(tmp_path, "cut", 8.0)
