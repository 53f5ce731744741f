"""`kill -9` and SIGTERM of a `retrorun serve` process mid-race (SQLite, then PostgreSQL), a
restart on the same database and port, SDK clients that reconnect and resend unacked fixes."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import (
    CloseCodes,
    ServerProcess,
    check,
    free_port,
    log_problems,
    make_race,
    p99,
    room_client,
    run_runner,
    wait_acked,
)

PER_S = 5.0  # fixes a second per runner: a 5 s restart queues ~30, under the room burst of 40


async def _race_through(srv: ServerProcess, sig: int, kill_after_s: float = 3.5) -> dict[str, Any]:
    setup = await make_race(srv.database_url, n_runners=2, distance_m=150.0)
    runners = {
        rid: room_client(srv.ws_url, setup.race_id, setup.world.tokens[rid], f"runner{i}")
        for i, rid in enumerate(setup.runners)
    }
    watcher = room_client(srv.ws_url, setup.race_id, setup.world.tokens[setup.organiser], "mod")
    figures: dict[str, Any] = {}
    with CloseCodes() as codes:
        for rec in [*runners.values(), watcher]:
            await rec.conn.connect()
            rec.start()
        senders = [
            asyncio.create_task(
                run_runner(rec, setup.tracks[rid], setup.expected[rid][0] + 1, PER_S)
            )
            for rid, rec in runners.items()
        ]
        await asyncio.sleep(kill_after_s)
        acked_before = {r.name: len(r.acked) for r in runners.values()}
        figures["unacked_at_fault"] = sum(len(r.conn.unacked) for r in runners.values())
        t_kill = time.monotonic()
        rc = await asyncio.to_thread(srv.kill, sig)
        figures["exit_code"] = rc
        figures["acked_before_fault"] = sum(acked_before.values())
        figures["restart_s"] = round(await asyncio.to_thread(srv.start), 2)
        # recovery: the first ack after the restart, for every runner (bounded wait)
        first_after: dict[str, float] = {}
        deadline = time.monotonic() + 20
        while len(first_after) < len(runners) and time.monotonic() < deadline:
            for rec in runners.values():
                after = [t for t, _ in rec.latency if t > t_kill]
                if after and rec.name not in first_after:
                    first_after[rec.name] = min(after) - t_kill
            await asyncio.sleep(0.02)
        figures["recovery_s"] = round(max(first_after.values(), default=float("nan")), 2)
        await asyncio.wait_for(asyncio.gather(*senders), 30)
        figures["all_acked"] = await wait_acked(list(runners.values()), 10)
        await asyncio.gather(*(r.wait_results(15) for r in [*runners.values(), watcher]))
        figures["close_codes"] = dict(codes.codes)
    lat_before = [lat for t, lat in (x for r in runners.values() for x in r.latency) if t < t_kill]
    lat_after = [lat for t, lat in (x for r in runners.values() for x in r.latency) if t > t_kill]
    figures["p99_ack_s_before"] = _r(p99(lat_before))
    figures["p99_ack_s_after"] = _r(p99(lat_after))
    figures["reconnects"] = sum(r.conn.reconnects for r in [*runners.values(), watcher])
    figures["acks_received_twice"] = sum(
        1 for r in runners.values() for c in r.acks.values() if c > 1
    )
    result = await check(srv.database_url, srv.http_url, setup, runners, [watcher])
    figures.update(result.figures)
    for rec in [*runners.values(), watcher]:
        await rec.stop()
    print(f"\nFIGURES {sig=} {figures}")
    if not figures["all_acked"]:
        print(
            "UNACKED",
            {r.name: sorted(r.conn.unacked) for r in runners.values()},
            "ACKED",
            {r.name: max(r.acked, default=0) for r in runners.values()},
            "ERRORS",
            [e for r in runners.values() for e in r.errors][:10],
            "CONNECTED",
            {r.name: (r.conn.connected, r.closed_code, repr(r.error)) for r in runners.values()},
        )
    assert figures["all_acked"], figures
    assert not result.problems, result
    return figures


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _server(db_url: str, tmp_path: Path) -> ServerProcess:
    return ServerProcess(db_url, free_port(), tmp_path / "server.log")


@pytest.mark.timeout(90)
async def test_kill_9_mid_race_on_sqlite_loses_no_acked_fix(tmp_path: Path) -> None:
    srv = _server(f"sqlite:///{tmp_path / 'kill.db'}", tmp_path)
    await asyncio.to_thread(srv.start)
    try:
        figures = await _race_through(srv, signal.SIGKILL)
        assert figures["exit_code"] == -signal.SIGKILL
        assert not log_problems(srv.log()), log_problems(srv.log())[:20]
    finally:
        srv.kill()


@pytest.mark.timeout(90)
async def test_sigterm_mid_race_closes_1012_and_stores_buffered_fixes(tmp_path: Path) -> None:
    srv = _server(f"sqlite:///{tmp_path / 'term.db'}", tmp_path)
    await asyncio.to_thread(srv.start)
    try:
        figures = await _race_through(srv, signal.SIGTERM)
        # uvicorn re-raises the captured SIGTERM once its shutdown completed
        assert figures["exit_code"] in (0, -signal.SIGTERM), srv.log()[-3000:]
        assert "Application shutdown complete" in srv.log()
        assert figures["close_codes"].get(1012, 0) >= 3, figures  # every socket: 2 runners + mod
        assert not log_problems(srv.log()), log_problems(srv.log())[:20]
    finally:
        srv.kill()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(90)
async def test_kill_9_mid_race_on_postgresql_loses_no_acked_fix(
    pg_url: str, tmp_path: Path
) -> None:
    import asyncpg

    name = f"retrorun_kill_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    db_url = f"{pg_url.rsplit('/', 1)[0]}/{name}"
    srv = _server(db_url, tmp_path)
    await asyncio.to_thread(srv.start)
    try:
        await _race_through(srv, signal.SIGKILL)
        assert not log_problems(srv.log()), log_problems(srv.log())[:20]
    finally:
        srv.kill()
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
