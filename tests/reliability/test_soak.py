"""Soak (on demand, `-m slow`, not in CI): a live race with churn for `RETRORUN_SOAK_S` seconds
(default 30 minutes), the server's memory and the runners' ack latency sampled throughout.

Runners send their fixes in real time (each fix when its timestamp comes, as a phone would); a
share of them lose their socket every sample period (the SDK reconnects and resends), and
spectators keep joining, watching a while and leaving. Afterwards: every acked fix stored once,
stream versions without gaps, every fix acked, the server log clean, and memory flat over the
last third of the run (descriptors back down once the clients left). Latency is recorded per
sample, not asserted (docs/reliability.md has the figures).

    RETRORUN_SOAK_S=300 .venv/bin/python -m pytest -n 0 tests/reliability/test_soak.py -m slow -s
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect

from game.generate import Profile, generate
from server.config import Settings
from tests.reliability.harness import (
    RaceSetup,
    Recorder,
    ServerProcess,
    check,
    connect_all,
    free_port,
    log_problems,
    p99,
    room_client,
    schedule_race,
    wait_acked,
)
from tests.rooms.conftest import SECRET, World, closed_by_server, gps_frames, shifted

SOAK_S = float(os.environ.get("RETRORUN_SOAK_S", "1800"))
RUNNERS = int(os.environ.get("RETRORUN_SOAK_RUNNERS", "150"))
SPECTATORS = int(os.environ.get("RETRORUN_SOAK_SPECTATORS", "100"))
#: a sample a minute; more often on a short run, so the last third has a few samples
SAMPLE_S = float(os.environ.get("RETRORUN_SOAK_SAMPLE_S", str(min(60.0, SOAK_S / 10))))
#: the RSS growth allowed over the last third of the run
RSS_GROWTH_MB = float(os.environ.get("RETRORUN_SOAK_RSS_GROWTH_MB", "16"))
DROPS_PER_SAMPLE = 0.1  # share of the runners whose socket is cut each sample period


async def _runner(rec: Recorder, frames: list[dict[str, Any]], stop_at: float) -> None:
    """Send each fix when its timestamp comes (the track starts at the gun, in real time)."""
    for frame in frames:
        wait = frame["t"] - time.time()
        if time.monotonic() + max(wait, 0.0) > stop_at:
            return
        if wait > 0:
            await asyncio.sleep(wait)
        await rec.send(frame)


async def _spectator(url: str, token: str, rng: random.Random, stop_at: float, stats: Any) -> None:
    while time.monotonic() < stop_at:
        try:
            async with connect(url, compression=None, open_timeout=30, close_timeout=2) as ws:
                await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
                stay_until = time.monotonic() + rng.uniform(5.0, 30.0)
                while time.monotonic() < min(stay_until, stop_at):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ws.recv(), 1.0)
                stats["joins"] += 1
        except Exception as exc:
            stats["failures"] += 1
            stats["last_failure"] = repr(exc)[:200]
        await asyncio.sleep(rng.uniform(1.0, 5.0))


@pytest.mark.slow
@pytest.mark.timeout(int(SOAK_S) + 900)
async def test_soak_race_with_churn_keeps_memory_flat(tmp_path: Path) -> None:
    srv = ServerProcess(f"sqlite:///{tmp_path / 'soak.db'}", free_port(), tmp_path / "server.log")
    await asyncio.to_thread(srv.start)
    rng = random.Random(11)
    try:
        world = World(Settings(database_url=srv.database_url, secret_key=SECRET, log_json=False))
        runners = await world.users(RUNNERS)
        (organiser,) = await world.users(1, "moderator")
        fans = await world.users(SPECTATORS)
        gun = time.time() - 1.0  # the fixes start half a second after the gun, in real time
        # long enough to outlast the soak (~1.9 m/s), and a line nobody reaches
        length_m = 2.5 * SOAK_S + 500
        tracks = {
            r: shifted(generate(Profile.HONEST_RECREATIONAL, 500 + i, 0.0, length_m), gun + 0.5)
            for i, r in enumerate(runners)
        }
        race_id = await schedule_race(world, organiser, runners, length_m * 3, gun)
        recs = {
            r: room_client(srv.ws_url, race_id, world.tokens[r], f"runner{i}", max_reconnects=200)
            for i, r in enumerate(runners)
        }
        watcher = room_client(srv.ws_url, race_id, world.tokens[organiser], "mod")
        await connect_all([*recs.values(), watcher])
        start = time.monotonic()
        stop_at = start + SOAK_S
        senders = [
            asyncio.create_task(_runner(rec, gps_frames(tracks[r]), stop_at))
            for r, rec in recs.items()
        ]
        stats: dict[str, Any] = {"joins": 0, "failures": 0}
        url = f"{srv.ws_url}/{race_id}"
        fans_tasks = [
            asyncio.create_task(_spectator(url, world.tokens[f], rng, stop_at, stats)) for f in fans
        ]
        samples: list[dict[str, Any]] = []
        dropped = 0
        t_prev = time.monotonic()
        while time.monotonic() < stop_at:
            await asyncio.sleep(min(SAMPLE_S, max(0.0, stop_at - time.monotonic())))
            now = time.monotonic()
            lat = [x for rec in recs.values() for t, x in rec.latency if t_prev < t <= now]
            samples.append(
                {
                    "t_s": round(now - start),
                    "rss_mb": round(srv.rss_kb() / 1024, 1),
                    "fds": srv.fds(),
                    "ws": await asyncio.to_thread(srv.gauge, "retrorun_ws_connections"),
                    "acks": len(lat),
                    "p50_s": round(statistics.median(lat), 3) if lat else None,
                    "p99_s": p99(lat),
                    "spectator_joins": stats["joins"],
                    "load_avg": os.getloadavg()[0],
                }
            )
            print(f"SAMPLE {samples[-1]}", flush=True)
            t_prev = now
            for rec in rng.sample(list(recs.values()), int(len(recs) * DROPS_PER_SAMPLE)):
                ws = rec.conn._ws  # a dropped network: the SDK reconnects and resends
                if ws is not None:
                    ws.transport.abort()
                    dropped += 1
        await asyncio.gather(*senders, *fans_tasks)
        all_acked = await wait_acked(list(recs.values()), 60)
        setup = RaceSetup(world, race_id, organiser, runners, tracks, {}, length_m * 3)
        result = await check(srv.database_url, srv.http_url, setup, recs, [], expect_finished=False)
        closed = await asyncio.to_thread(closed_by_server, srv.http_url)  # before they leave
        for rec in [*recs.values(), watcher]:
            await rec.stop()
        deadline = time.monotonic() + 20
        while (srv.gauge("retrorun_ws_connections") or 0) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        third = samples[-max(2, len(samples) // 3) :]
        growth = third[-1]["rss_mb"] - third[0]["rss_mb"]
        figures = {
            "soak_s": SOAK_S,
            "runners": RUNNERS,
            "spectators": SPECTATORS,
            "sockets_dropped": dropped,
            "reconnects": sum(r.conn.reconnects for r in recs.values()),
            "stalls": sum(r.conn.stalls for r in recs.values()),  # silent sockets replaced
            "closed_by_server": closed,  # by close code (1013: slow consumers)
            "spectator_joins": stats["joins"],
            "spectator_failures": stats["failures"],
            "rss_mb_first_last": (samples[0]["rss_mb"], samples[-1]["rss_mb"]),
            "rss_growth_last_third_mb": round(growth, 1),
            "ws_after": srv.gauge("retrorun_ws_connections"),
            "all_acked": all_acked,
            **result.figures,
        }
        print(f"\nFIGURES {figures}")
        assert all_acked, figures
        assert not result.problems, result
        assert growth <= RSS_GROWTH_MB, (figures, samples)
        assert figures["ws_after"] == 0.0, figures
        assert stats["failures"] <= max(1, stats["joins"] // 100), stats
        assert not log_problems(srv.log()), log_problems(srv.log())[:20]
    finally:
        await asyncio.to_thread(srv.kill)
