"""Memory per open room socket (issue 5's <= 20 KiB target), idle and racing, beside two peers.

Each server is its own process on a loopback port; one client process opens the sockets
(websockets, no compression) and reads every frame. RSS comes from /proc/<pid>/statm:

  retrorun   `retrorun serve` (SQLite in a temp dir, standings at 4 Hz, rate limits off): N
             runners and N spectators signed in to one race room (real JWTs, `auth` first, each
             waits for its `welcome`); then the race starts and every runner sends one honest
             phone fix a second (position, accuracy, speed, course, heading, cadence) for
             `--seconds` seconds
  uvicorn    a bare ASGI WebSocket app on uvicorn's websockets-sansio protocol (accept, then
             read until the socket closes): the floor under any ASGI room
  websockets a plain `websockets` asyncio server whose handler reads until the socket closes

KiB per socket = (RSS with the sockets open - RSS before the first one) / sockets, after a 3 s
settle; for retrorun also after the racing seconds (includes each runner's race state).

    .venv/bin/python bench/bench_room_memory.py                 # N=1000: 2,001 sockets
    .venv/bin/python bench/bench_room_memory.py --runners 200

Results go to docs/benchmarks.md under `## Room memory` (only that section; --no-write).
Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_rooms as rooms
import orjson

HEADING = "## Room memory"
_SENSORS = (
    ("speed", "speed_mps"),
    ("course", "course_deg"),
    ("heading", "heading_deg"),
    ("cadence", "cadence_spm"),
)
SETTLE_S = 3.0

_BARE_UVICORN = """
import uvicorn

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass

uvicorn.run(app, host="127.0.0.1", port=PORT, ws="websockets-sansio",
            ws_per_message_deflate=False, ws_max_size=65536, log_level="warning")
"""

_BARE_WEBSOCKETS = """
import asyncio
from websockets.asyncio.server import serve

async def handler(ws):
    async for _ in ws:
        pass

async def main():
    async with serve(handler, "127.0.0.1", PORT, compression=None, max_size=65536):
        await asyncio.Future()

asyncio.run(main())
"""


async def _open(url: str, first: list[str], timeout_s: float) -> list[Any]:
    """One socket per entry of `first` (a first frame to send, or ""), in that order, 32
    handshakes at a time; a socket with a first frame waits for its `welcome`."""
    from websockets.asyncio.client import connect

    sem = asyncio.Semaphore(32)
    socks: list[Any] = [None] * len(first)

    async def one(k: int, frame: str) -> None:
        async with sem, asyncio.timeout(timeout_s):
            ws = await connect(url, compression=None, ping_interval=None, max_size=1 << 20)
            if frame:
                await ws.send(frame)
                for _ in range(5):
                    if b'"welcome"' in (await ws.recv(decode=False))[:40]:
                        break
                else:
                    raise RuntimeError("no welcome")
            socks[k] = ws

    await asyncio.gather(*(one(k, f) for k, f in enumerate(first)))
    return socks


class _Tally:
    """Frames the clients received, by type (errors by code): a run whose race did not start
    or whose fixes were refused would measure the wrong thing, so it fails."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    async def drain(self, ws: Any) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                frame = orjson.loads(raw)
                kind = frame.get("type", "?")
                if kind == "error":
                    kind = f"error:{frame.get('code')}"
                self.counts[kind] = self.counts.get(kind, 0) + 1


async def _measure_peer(url: str, pid: int, sockets: int) -> dict[str, Any]:
    base = rooms.proc_rss_kib(pid)
    socks = await _open(url, [""] * sockets, 60.0)
    tally = _Tally()
    readers = [asyncio.create_task(tally.drain(ws)) for ws in socks]
    await asyncio.sleep(SETTLE_S)
    idle = rooms.proc_rss_kib(pid)
    for ws in socks:
        await ws.close()
    for r in readers:
        r.cancel()
    return {"sockets": len(socks), "base": base, "idle": idle}


async def _measure_retrorun(
    url: str, pid: int, clients: list[tuple[str, str, int]], seconds: float
) -> dict[str, Any]:
    from game.generate import Profile, generate

    base = rooms.proc_rss_kib(pid)
    auth = [orjson.dumps({"type": "auth", "token": tok}).decode() for _, tok, _ in clients]
    socks = await _open(url, auth, 60.0)
    tally = _Tally()
    readers = [asyncio.create_task(tally.drain(ws)) for ws in socks]
    await asyncio.sleep(SETTLE_S)
    idle = rooms.proc_rss_kib(pid)
    # the sockets were opened in `clients` order: the moderator first, then the runners
    await socks[0].send(orjson.dumps({"type": "control", "action": "start"}).decode())
    await asyncio.sleep(rooms.COUNTDOWN_S + 1.0)
    runners = [(socks[k], idx) for k, (kind, _, idx) in enumerate(clients) if kind == "runner"]
    tracks = {idx: generate(Profile.HONEST_RECREATIONAL, idx, 0.0, 400.0) for _, idx in runners}
    start = time.time()
    for step in range(int(seconds)):
        for ws, idx in runners:
            tr = tracks[idx]
            i = min(step, len(tr) - 1)
            fix = {"type": "gps", "seq": step + 1, "t": time.time(), "acc": float(tr.acc_m[i])}
            fix |= {"lat": float(tr.lat[i]), "lon": float(tr.lon[i])}
            for key, arr in _SENSORS:  # what a phone reports beside the position
                value = float(getattr(tr, arr)[i])
                if not math.isnan(value):
                    fix[key] = value % 360.0 if key in ("course", "heading") else value
            await ws.send(orjson.dumps(fix).decode())
        await asyncio.sleep(max(0.0, start + step + 1 - time.time()))
    racing = rooms.proc_rss_kib(pid)
    errors = {k: v for k, v in tally.counts.items() if k.startswith("error")}
    if errors or tally.counts.get("ack", 0) < len(runners):
        raise RuntimeError(f"the race did not run as planned: {tally.counts}")
    for ws in socks:
        await ws.close()
    for r in readers:
        r.cancel()
    return {"sockets": len(socks), "base": base, "idle": idle, "racing": racing, **tally.counts}


def _run(name: str, n: int, seconds: float, tmp: Path) -> dict[str, Any]:
    port = rooms.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRORUN_")}
    if name == "retrorun":
        db_url = f"sqlite:///{tmp / 'memory.db'}"
        env |= {
            "RETRORUN_DATABASE_URL": db_url,
            "RETRORUN_ROOM_TICK_HZ": "4",
            "RETRORUN_RATE_LIMITS_ENABLED": "false",
            "RETRORUN_SECRET_KEY": rooms.SECRET,
        }
        cmd = [*rooms.SERVER_CMD, "--host", "127.0.0.1", "--port", str(port)]
    else:
        code = _BARE_UVICORN if name == "uvicorn" else _BARE_WEBSOCKETS
        cmd = [sys.executable, "-c", code.replace("PORT", str(port))]
    log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=rooms.ROOT)
    try:
        rooms._wait_port(port, proc, 60.0)
        if name == "retrorun":
            race_id, clients = asyncio.run(rooms._retrorun_setup(db_url, port, n))
            time.sleep(1.0)
            url = f"ws://127.0.0.1:{port}/ws/rooms/{race_id}"
            result = asyncio.run(_measure_retrorun(url, proc.pid, clients, seconds))
        else:
            url = f"ws://127.0.0.1:{port}/ws/rooms/bench"
            result = asyncio.run(_measure_peer(url, proc.pid, 2 * n + 1))
    finally:
        rooms._stop(proc)
        log.close()
    return {"server": name, **result}


def _kib(r: dict[str, Any], key: str) -> str:
    if key not in r:
        return "-"
    return f"{(r[key] - r['base']) / r['sockets']:.1f}"


def render(results: list[dict[str, Any]], n: int, seconds: float) -> str:
    rows = [
        f"| {r['server']} | {r['sockets']:,} | {r['base'] / 1024:.1f} | {r['idle'] / 1024:.1f} "
        f"| {_kib(r, 'idle')} | {_kib(r, 'racing')} |"
        for r in results
    ]
    return "\n".join(
        [
            HEADING,
            "",
            f"`.venv/bin/python bench/bench_room_memory.py --runners {n} --seconds {seconds:g}`"
            " — RSS per open room "
            f"socket: N runners + N spectators + 1 moderator signed in to one race room "
            f"(retrorun), the same number of sockets on a bare uvicorn ASGI WebSocket app and on "
            f"a plain `websockets` server; idle after {SETTLE_S:g} s, then (retrorun) after "
            f"{seconds:g} s of racing, every runner sending a fix a second, standings at 4 Hz.",
            "",
            "| server | sockets | RSS before MiB | RSS open MiB | KiB/socket idle "
            "| KiB/socket racing |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "Target (issue 5): <= 20 KiB per connection. What each layer holds and what was cut: "
            "docs/decisions.md, 'Room sockets: beside FastAPI's routing, on a leaner uvicorn "
            "protocol'. `bench_rooms.py` reports the same ratio under full load (4 Hz standings "
            "to every socket, 1 Hz fixes from every runner, 20 s).",
            "",
            f"Machine: {rooms.cpu_model()}; {rooms.versions()}.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runners", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0, help="racing seconds")
    parser.add_argument("--servers", default="retrorun,uvicorn,websockets")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.servers.split(","):
            r = _run(name, args.runners, args.seconds, Path(tmp))
            print(r, flush=True)
            results.append(r)
    section = render(results, args.runners, args.seconds)
    print(section)
    if not args.no_write:
        rooms.write_section(section, HEADING)


if __name__ == "__main__":
    main()
