"""`kill -9` and SIGTERM of a `retrorun serve` process mid-race (SQLite, then PostgreSQL), a
restart on the same database and port, SDK clients that reconnect and resend unacked fixes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.reliability.harness import (
    SMALL,
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
from tests.rooms.conftest import gps_frames

# SMALL sends 5 fixes a second per runner: a 5 s restart queues ~30, under the room burst of 40


async def _race_through(srv: ServerProcess, sig: int, load: Load = SMALL) -> dict[str, Any]:
    setup = await make_race(srv.database_url, n_runners=load.runners, distance_m=load.distance_m)
    runners = {
        rid: room_client(srv.ws_url, setup.race_id, setup.world.tokens[rid], f"runner{i}")
        for i, rid in enumerate(setup.runners)
    }
    watcher = room_client(srv.ws_url, setup.race_id, setup.world.tokens[setup.organiser], "mod")
    figures: dict[str, Any] = {"runners": load.runners, "fixes_per_s": load.per_s}
    with CloseCodes() as codes:
        await connect_all([*runners.values(), watcher])
        senders = [
            asyncio.create_task(
                run_runner(rec, setup.tracks[rid], setup.expected[rid][0] + 1, load.per_s)
            )
            for rid, rec in runners.items()
        ]
        await asyncio.sleep(load.fault_after_s)
        acked_before = {r.name: len(r.acked) for r in runners.values()}
        figures["unacked_at_fault"] = sum(len(r.conn.unacked) for r in runners.values())
        figures["load_avg_at_fault"] = os.getloadavg()[0]
        recs = list(runners.values())
        racing = [
            r for r, task in zip(recs, senders, strict=True) if r.conn.unacked or not task.done()
        ]
        figures["racing_at_fault"] = len(racing)
        t_kill = time.monotonic()
        rc = await asyncio.to_thread(srv.kill, sig)
        figures["exit_code"] = rc
        figures["stop_s"] = round(time.monotonic() - t_kill, 2)
        figures["acked_before_fault"] = sum(acked_before.values())
        figures["restart_s"] = round(await asyncio.to_thread(srv.start), 2)
        # recovery: the first ack after the restart, for every runner (bounded wait)
        deadline = time.monotonic() + load.recover_s
        while len(first_acks_after(racing, t_kill)) < len(racing) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        after = first_acks_after(racing, t_kill)
        figures["recovered_runners"] = len(after)
        figures["recovery_s"] = round(max(after, default=float("nan")), 2)
        t_calm = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*senders), 60 + 3 * load.recover_s)
        figures["all_acked"] = await wait_acked(recs, load.settle_s)
        await asyncio.gather(*(r.wait_results(load.results_s) for r in [*recs, watcher]))
        figures["close_codes"] = dict(codes.codes)
        figures["load_avg_end"] = os.getloadavg()[0]
    before, during, later = windows_p99(recs, t_kill, t_calm)
    figures.update(p99_ack_s_before=before, p99_ack_s_recovery=during, p99_ack_s_after=later)
    figures["reconnects"] = sum(r.conn.reconnects for r in [*runners.values(), watcher])
    figures["acks_received_twice"] = sum(
        1 for r in runners.values() for c in r.acks.values() if c > 1
    )
    result = await check(srv.database_url, srv.http_url, setup, runners, [watcher])
    figures.update(result.figures)
    await asyncio.gather(*(rec.stop() for rec in [*runners.values(), watcher]))
    print(f"\nFIGURES {sig=} {figures}")
    if not figures["all_acked"]:
        print(
            "UNACKED",
            {r.name: sorted(r.conn.unacked) for r in runners.values() if r.conn.unacked},
            "ERRORS",
            [e for r in runners.values() for e in r.errors][:10],
            "CONNECTED",
            [
                (r.name, r.conn.connected, r.closed_code, repr(r.error))
                for r in runners.values()
                if r.conn.unacked
            ][:10],
        )
    assert figures["all_acked"], figures
    assert not result.problems, result
    return figures


def _server(db_url: str, tmp_path: Path, load: Load = SMALL) -> ServerProcess:
    return ServerProcess(db_url, free_port(), tmp_path / "server.log", env=load.server_env)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("load", loads())
async def test_kill_9_mid_race_on_sqlite_loses_no_acked_fix(tmp_path: Path, load: Load) -> None:
    srv = _server(f"sqlite:///{tmp_path / 'kill.db'}", tmp_path, load)
    await asyncio.to_thread(srv.start)
    try:
        figures = await _race_through(srv, signal.SIGKILL, load)
        assert figures["exit_code"] == -signal.SIGKILL
        assert not log_problems(srv.log()), log_problems(srv.log())[:20]
    finally:
        srv.kill()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("load", loads())
async def test_sigterm_mid_race_closes_1012_and_stores_buffered_fixes(
    tmp_path: Path, load: Load
) -> None:
    srv = _server(f"sqlite:///{tmp_path / 'term.db'}", tmp_path, load)
    await asyncio.to_thread(srv.start)
    try:
        figures = await _race_through(srv, signal.SIGTERM, load)
        # uvicorn re-raises the captured SIGTERM once its shutdown completed
        assert figures["exit_code"] in (0, -signal.SIGTERM), srv.log()[-3000:]
        assert "Application shutdown complete" in srv.log()
        # every socket (the runners' and the moderator's) was closed with 1012
        assert figures["close_codes"].get(1012, 0) >= load.runners + 1, figures
        assert not log_problems(srv.log()), log_problems(srv.log())[:20]
    finally:
        srv.kill()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
@pytest.mark.parametrize("load", loads())
async def test_kill_9_mid_race_on_postgresql_loses_no_acked_fix(
    pg_url: str, tmp_path: Path, load: Load
) -> None:
    import asyncpg

    name = f"retrorun_kill_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    db_url = f"{pg_url.rsplit('/', 1)[0]}/{name}"
    srv = _server(db_url, tmp_path, load)
    await asyncio.to_thread(srv.start)
    try:
        await _race_through(srv, signal.SIGKILL, load)
        assert not log_problems(srv.log()), log_problems(srv.log())[:20]
    finally:
        srv.kill()
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _busy_client(url: str, token: str, frames: list[dict[str, Any]], busy: bool) -> int:
    """A runner's socket; a busy one stops reading for a while and keeps sending meanwhile (a
    phone whose app is busy). Returns the close code it saw."""
    ws = await connect(url, compression=None, ping_interval=None, max_queue=None)
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    async with asyncio.timeout(10):
        while orjson.loads(await ws.recv())["type"] != "welcome":
            pass
    if busy:
        ws.transport.pause_reading()
        with contextlib.suppress(ConnectionClosed):
            for i in range(400):  # resent fixes: the room acks them, nothing new is applied
                frame = {**frames[i % len(frames)], "seq": 1 + i % len(frames)}
                await ws.send(orjson.dumps(frame).decode())
                await asyncio.sleep(0.005)
        ws.transport.resume_reading()
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(20):
            async for _ in ws:
                pass
    return int(ws.close_code or 0)


@pytest.mark.timeout(60)
async def test_sigterm_closes_1012_even_for_a_runner_that_was_not_reading(tmp_path: Path) -> None:
    srv = _server(f"sqlite:///{tmp_path / 'busy.db'}", tmp_path)
    await asyncio.to_thread(srv.start)
    try:
        setup = await make_race(srv.database_url, n_runners=4, distance_m=150.0)
        url = f"{srv.ws_url}/{setup.race_id}"
        clients = [
            asyncio.create_task(
                _busy_client(url, setup.world.tokens[r], gps_frames(setup.tracks[r]), i % 2 == 0)
            )
            for i, r in enumerate(setup.runners)
        ]
        await asyncio.sleep(1.0)  # the busy ones have stopped reading and are sending
        await asyncio.to_thread(srv.kill, signal.SIGTERM)
        codes = await asyncio.wait_for(asyncio.gather(*clients), 30)
        assert codes == [1012] * 4, codes
    finally:
        srv.kill()
