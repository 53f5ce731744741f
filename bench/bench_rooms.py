"""Live-race room benchmark (issue 5): one room, N runners at 1 Hz plus N spectators.

Three servers, each a separate process on a loopback port, driven by the same load generator:

  retrorun   `retrorun serve` (uvicorn, the real room: pace check, durable fixes, acks), SQLite in
             a temp dir, RETRORUN_ROOM_TICK_HZ=4 (and 1), rate limits off, a throwaway secret key
  naive      a tiny FastAPI app in this file: a ticker at the same Hz computes the standings once
             and does `await ws.send_text` to each client in turn (no queues)
  broadcast  a plain `websockets` server: gps frames update the race, a ticker at the same Hz
             computes the standings and sends them with `websockets.broadcast()`

Both peers tick at fixed deadlines, as the room does (`every`): a ticker that sleeps a period
after its work drifts below the rate and would be charged for it in latency.

The peers do the same per-fix and per-standings work as the room (`server.rooms.protocol.decode`
strict frame validation, `game.races.RaceLive.add_fix` with the live pace check,
`RaceLive.standings`, the same frame layout and orjson encoding); they store nothing and send no
acks. Tokens are real JWTs for retrorun (accounts inserted into its database, the race created
with `POST /api/v1/races`, runners registered through `game.races.decide` in one append, started
by a moderator's `control {action: start}` frame) and plain names for the peers.

Load generator: `--workers` processes (multiprocessing, spawn), each an asyncio loop of raw
WebSocket clients (`RawSocket`, an asyncio protocol: no task per socket or frame; no
compression). Open loop: each runner sends fix k at its own time
`gun + phase + offset_k` (phase uniform in [0, 1) s, offsets from a `game.generate` honest phone
track, so 1 Hz, with `t` = that server time, as clients/simulate.py does); a late server does not
slow the schedule down. Latency is carried in the frames: each gps frame has `echo` = its seq, and
the first standings frame whose `you.echo` is >= that seq reflects it; latency = receive time of
that frame - the fix's scheduled send time. Fixes scheduled inside the measurement window and never
reflected before the end count as lost (they rank above every latency, so a percentile that lands
on them prints as '>'). Generator health: CPU of each worker process, event-loop lag (a 20 ms
heartbeat) and send lag; a run where a worker used >= 90% of a core, the workers together >= 90%
of the generator's cores, or the loop lag or send lag p99 exceeded 50 ms is marked invalid (the
generator, not the server, would be the bottleneck). On two cores or more the server (and each
peer) is pinned to the first core and the generator to the others (`--no-pin`: not).

Server CPU and RSS come from /proc/<pid>: CPU = (utime + stime) over the measurement window, in %
of one core; memory per connection = (the larger of the RSS at the end of the window and its 1 s
peak - RSS before the first socket) / sockets (includes the room's per-runner state). Frame size:
the mean standings frame a runner and a spectator received in the window.

    .venv/bin/python bench/bench_rooms.py           # quick: N=200, 20 s per config (< 4 min)
    .venv/bin/python bench/bench_rooms.py --full    # N=1000 and the ramp (bounded, < 10 min)

Results go to docs/benchmarks.md under `## Rooms` (only that section is replaced; --no-write).
Every loop is bounded in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.metadata as md
import json
import math
import multiprocessing as mp
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Rooms"
VENV_BIN = Path(sys.executable).parent
RACE_DISTANCE_M = 42_195.0
COUNTDOWN_S = 3.0
#: Generator health limits: beyond these the run measures the generator, not the server.
GEN_CPU_LIMIT = 0.90
GEN_LOOP_LAG_P99_MS = 50.0
GEN_SEND_LAG_P99_MS = 50.0
HEARTBEAT_S = 0.02
#: Ramp: stop once p99 passes this.
KNEE_P99_MS = 500.0
TARGETS = {"p50": 150.0, "p99": 300.0, "cpu": 60.0, "kib": 20.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------------------------
# /proc readings


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    return sum(proc_times_s(pid))


def proc_times_s(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process (all its threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE // 1024


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(sorted_vals: list[float], q: float, total: int | None = None) -> float:
    """Nearest-rank percentile of `total` samples whose finite part is `sorted_vals` (the rest,
    lost, rank above everything: inf)."""
    n = total if total is not None else len(sorted_vals)
    if n == 0:
        return float("nan")
    k = max(1, math.ceil(q / 100.0 * n)) - 1
    return sorted_vals[k] if k < len(sorted_vals) else float("inf")


# --------------------------------------------------------------------------------------------
# the load generator (worker processes)


@dataclass
class Client:
    kind: str  # runner / spectator / moderator
    token: str
    index: int  # runner index (track seed), else -1
    ws: Any = None
    fixes: list[tuple[float, str]] = field(default_factory=list)  # (offset_s, frame prefix)
    phase: float = 0.0
    pending: deque[tuple[int, float]] = field(default_factory=deque)  # (seq, scheduled mono)
    close_code: int | None = None
    welcomed: Any = None  # a future, set by the welcome frame


def _tracks(runners: list[Client], seed: int, seconds_needed: float) -> None:
    """Honest 1 Hz phone tracks (game.generate), long enough for the run, as frame prefixes."""
    import numpy as np

    from game.generate import Device, Level, honest_track, runner_params

    levels = (Level.RECREATIONAL, Level.TRAINED, Level.RECREATIONAL, Level.WALKER)
    for c in runners:
        rng = np.random.default_rng([seed, c.index])
        c.phase = float(rng.uniform(0.0, 1.0))
        params = runner_params(rng, levels[c.index % 4], distance_m=5000.0, device=Device.PHONE)
        best = None
        for _ in range(8):  # prefer a track without dropouts (a steady 1 Hz runner)
            length = params.speed_mps * seconds_needed * 1.4 + 50.0
            tr = honest_track(params, rng, 0.0, length)
            gaps = float(np.max(np.diff(tr.t))) if len(tr) > 1 else 0.0
            if best is None or gaps < best[0]:
                best = (gaps, tr)
            if gaps < 1.5 and len(tr) >= seconds_needed:
                break
        assert best is not None
        tr = best[1]
        t0 = float(tr.t[0])
        out = []
        for i in range(len(tr)):
            parts = [f'"lat":{float(tr.lat[i])!r},"lon":{float(tr.lon[i])!r}']
            for key, arr in (
                ("acc", tr.acc_m),
                ("speed", tr.speed_mps),
                ("course", tr.course_deg),
                ("heading", tr.heading_deg),
                ("cadence", tr.cadence_spm),
            ):
                v = float(arr[i])
                if not math.isnan(v):
                    if key in ("course", "heading"):
                        v = v % 360.0
                    parts.append(f'"{key}":{v!r}')
            out.append((float(tr.t[i]) - t0, ",".join(parts)))
        c.fixes = out


class RawSocket(asyncio.Protocol):
    """A WebSocket client for the load generator, as an asyncio protocol: frames parsed in
    `data_received`, no task or future per frame. `websockets` clients cost more (at 4,001
    sockets, 79-93% of a core for the generator against 53% with these), and a generator on the
    same 2 cores must leave the server its core (a run where the generator saturates is
    invalid). Client frames are masked with the all-zero
    key (RFC 6455 allows any key; the server unmasks them as usual), so a frame is its header and
    the text as is. Server pings are answered; the close code is kept."""

    def __init__(self, path: str, host: str, on_text: Any, on_close: Any) -> None:
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode()
        self._buf = bytearray()
        self._on_text, self._on_close = on_text, on_close
        self.transport: Any = None
        self.open = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self._request)

    def send(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    def send_frame(self, opcode: int, data: bytes) -> None:
        if self.transport.is_closing():
            return
        n = len(data)
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        self.transport.write(head + b"\0\0\0\0" + data)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self.open.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:12])
            del buf[: end + 4]
            if not status.startswith(b"HTTP/1.1 101"):
                self.open.set_exception(ConnectionError(status.decode(errors="replace")))
                self.transport.close()
                return
            self.open.set_result(None)
        while len(buf) >= 2:
            n, at = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, at = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + n:
                return
            opcode = buf[0] & 0x0F
            payload = bytes(buf[at : at + n])
            del buf[: at + n]
            if opcode == 0x1:
                self._on_text(payload)
            elif opcode == 0x9:  # ping: pong with its payload
                self.send_frame(0xA, payload)
            elif opcode == 0x8:
                self._closed(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005)
                self.transport.close()
                return

    def _closed(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
            self._on_close(code)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError("closed during the handshake"))
        self._closed(1006)


async def _worker_main(conn: Any, spec: dict[str, Any]) -> None:
    url: str = spec["url"]
    host_port, _, path = url.removeprefix("ws://").partition("/")
    host, _, port = host_port.rpartition(":")
    path = "/" + path
    clients = [Client(k, tok, idx) for k, tok, idx in spec["clients"]]
    runners = [c for c in clients if c.kind == "runner"]
    moderator = next((c for c in clients if c.kind == "moderator"), None)
    _tracks(runners, spec["seed"], spec["seconds_needed"])
    stats: dict[str, Any] = {
        "connect_failed": 0,
        "errors": {},
        "error_samples": [],
        "closes": {},
        "acks": 0,
        "frames_runner": 0,
        "frames_spectator": 0,
        "bytes_in": 0,
        "standings_runner_window": 0,
        "standings_spectator_window": 0,
        "standings_runner_bytes": 0,
        "standings_spectator_bytes": 0,
        "sent": 0,
        "sent_window": 0,
        "stopped_early": 0,
    }
    latencies: list[float] = []
    send_lags: list[float] = []
    loop_lags: list[float] = []
    window = {"start": math.inf, "end": math.inf}
    start_box: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    countdown = loop.create_future()
    lat_append = latencies.append

    def on_text(c: Client, raw: bytes) -> None:
        now = time.monotonic()
        stats["bytes_in"] += len(raw)
        head = raw[:30]
        if b'"standings"' in head:
            in_window = window["start"] <= now <= window["end"]
            if c.kind != "runner":
                stats["frames_spectator"] += 1
                if in_window:
                    stats["standings_spectator_window"] += 1
                    stats["standings_spectator_bytes"] += len(raw)
                return
            stats["frames_runner"] += 1
            if in_window:
                stats["standings_runner_window"] += 1
                stats["standings_runner_bytes"] += len(raw)
            you = orjson.loads(raw).get("you")
            echo = you.get("echo") if you else None
            if echo is None:
                return
            e = int(echo)
            pend = c.pending
            while pend and pend[0][0] <= e:
                _seq, sched = pend.popleft()
                if window["start"] <= sched < window["end"]:
                    lat_append((now - sched) * 1000.0)
        elif b'"ack"' in head:
            stats["acks"] += 1
        elif b'"welcome"' in head:
            if c.welcomed is not None and not c.welcomed.done():
                c.welcomed.set_result(None)
        elif b'"countdown"' in head:
            if c is moderator and not countdown.done():
                countdown.set_result(orjson.loads(raw)["start_at"])
        elif b'"error"' in head:
            code = orjson.loads(raw).get("code", "?")
            stats["errors"][code] = stats["errors"].get(code, 0) + 1
            if len(stats["error_samples"]) < 5:
                stats["error_samples"].append(raw[:200].decode(errors="replace"))

    def on_close(c: Client, code: int) -> None:
        if c.ws is None:  # during the join: counted as a failed connect
            return
        c.close_code = code
        stats["closes"][str(code)] = stats["closes"].get(str(code), 0) + 1

    # connect: bounded concurrency, bounded time
    sem = asyncio.Semaphore(32)

    async def join(c: Client) -> None:
        for attempt in range(2):  # one retry: a refused handshake under a connect storm
            if c.ws is None:
                await join_once(c, attempt)

    async def join_once(c: Client, attempt: int) -> None:
        async with sem:
            proto = None
            try:
                async with asyncio.timeout(30.0):
                    c.welcomed = loop.create_future()
                    _tr, proto = await loop.create_connection(
                        lambda: RawSocket(
                            path,
                            host_port,
                            lambda raw: on_text(c, raw),
                            lambda code: on_close(c, code),
                        ),
                        host,
                        int(port),
                    )
                    await proto.open
                    proto.send(orjson.dumps({"type": "auth", "token": c.token}).decode())
                    await c.welcomed  # welcome first
                    c.ws = proto
            except Exception as exc:
                if proto is not None and proto.transport is not None:
                    proto.transport.abort()
                if attempt == 0:
                    await asyncio.sleep(0.5)
                    return
                stats["connect_failed"] += 1
                if len(stats["error_samples"]) < 5:
                    stats["error_samples"].append(f"connect: {exc!r}"[:200])

    await asyncio.gather(*(join(c) for c in clients))
    conn.send(("connected", sum(1 for c in clients if c.ws is not None)))

    mono_of_wall = time.time() - time.monotonic()
    live = [c for c in clients if c.ws is not None]

    # the moderator (worker 0) starts the race when the parent says so
    msg = await loop.run_in_executor(None, conn.recv)
    if msg[0] == "start" and moderator is not None and moderator.ws is not None:
        moderator.ws.send(
            orjson.dumps(
                {"type": "control", "action": "start", "countdown_s": COUNTDOWN_S}
            ).decode()
        )
        try:
            gun = float(await asyncio.wait_for(countdown, 15.0))
        except TimeoutError:
            gun = -1.0
        conn.send(("gun", gun))
        msg = await loop.run_in_executor(None, conn.recv)
    if msg[0] != "go":
        conn.send(("result", {"aborted": True, "stats": stats}))
        return
    start_box.update(msg[1])
    gun_wall = start_box["gun"]
    gun_mono = gun_wall - mono_of_wall
    window["start"] = start_box["measure_start"] - mono_of_wall
    window["end"] = start_box["measure_end"] - mono_of_wall
    stop_mono = start_box["stop"] - mono_of_wall
    cpu_marks: dict[str, float] = {}

    async def marks() -> None:
        for name, at in (("start", window["start"]), ("end", window["end"])):
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            cpu_marks[name] = time.process_time()

    async def heartbeat() -> None:
        nxt = time.monotonic() + HEARTBEAT_S
        while nxt < stop_mono:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            now = time.monotonic()
            if window["start"] <= now <= window["end"]:
                loop_lags.append((now - nxt) * 1000.0)
            nxt += HEARTBEAT_S

    async def run(c: Client) -> None:
        ws = c.ws
        for k, (off, body) in enumerate(c.fixes):
            sched = gun_mono + c.phase + off
            if sched >= stop_mono:
                return
            delay = sched - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if c.close_code is not None:
                return
            seq = k + 1
            t_server = gun_wall + c.phase + off  # the server time the fix was scheduled for
            frame = f'{{"type":"gps","seq":{seq},"t":{t_server!r},{body},"echo":{seq}}}'
            c.pending.append((seq, sched))
            now = time.monotonic()
            in_window = window["start"] <= sched < window["end"]
            if in_window:
                send_lags.append((now - sched) * 1000.0)
                stats["sent_window"] += 1
            stats["sent"] += 1
            if ws.transport.is_closing():
                return
            ws.send(frame)
        stats["stopped_early"] += 1  # the track ran out before the end

    senders = [asyncio.create_task(run(c)) for c in live if c.kind == "runner"]
    aux = [asyncio.create_task(marks()), asyncio.create_task(heartbeat())]
    await asyncio.sleep(max(0.0, stop_mono - time.monotonic()))
    for t in senders + aux:
        t.cancel()
    await asyncio.gather(*senders, *aux, return_exceptions=True)
    lost = 0
    for c in live:
        for _seq, sched in c.pending:
            if window["start"] <= sched < window["end"]:
                lost += 1
    cpu = (
        cpu_marks["end"] - cpu_marks["start"]
        if "start" in cpu_marks and "end" in cpu_marks
        else float("nan")
    )
    conn.send(
        (
            "result",
            {
                "latencies": latencies,
                "lost": lost,
                "send_lags": send_lags,
                "loop_lags": loop_lags,
                "cpu_s": cpu,
                "runners": sum(1 for c in live if c.kind == "runner"),
                "spectators": sum(1 for c in live if c.kind == "spectator"),
                "stats": stats,
            },
        )
    )
    for c in live:  # the server is stopped next: no closing handshake needed
        with contextlib.suppress(Exception):
            c.ws.transport.abort()


def worker_entry(conn: Any, spec: dict[str, Any]) -> None:
    try:
        if spec.get("cpus"):  # the generator's core(s), away from the server's
            os.sched_setaffinity(0, spec["cpus"])
        import uvloop

        uvloop.run(_worker_main(conn, spec))
    except Exception as exc:
        with contextlib.suppress(Exception):
            conn.send(("failed", repr(exc)))


# --------------------------------------------------------------------------------------------
# peer servers (run as `bench_rooms.py --peer naive|broadcast`)


class PeerRace:
    """The race state a peer keeps: the same engine and frames as the room."""

    def __init__(self, runners: int) -> None:
        self.registered = tuple(f"r{i}" for i in range(runners))
        self.live: Any = None
        self.echo: dict[str, float | None] = {}
        self.tick = 0
        self.dirty = False

    def role_of(self, token: str) -> tuple[str, str]:
        kind, _, ident = token.partition(":")
        if kind == "runner":
            return "runner", f"r{ident}"
        return kind, f"{kind[0]}{ident}"

    def welcome(self, rid: str, role: str) -> str:
        return orjson.dumps(
            {"type": "welcome", "room": "bench", "role": role, "you": rid, "seq": 0}
        ).decode()

    def start(self) -> str:
        from game.races import RaceLive

        start_at = round(time.time() + COUNTDOWN_S, 3)
        self.live = RaceLive(RACE_DISTANCE_M, start_at)
        return orjson.dumps(
            {"type": "countdown", "seq": 1, "epoch": "peer", "start_at": start_at}
        ).decode()

    def gps(self, rid: str, frame: Any) -> None:
        from server.rooms.frames import gps_fix

        fix = gps_fix(frame)  # the room's own conversion (stored precision)
        if frame.echo is not None:
            self.echo[rid] = frame.echo
        self.live.add_fix(rid, fix, time.time())
        self.dirty = True

    def standings(self) -> tuple[str, dict[str, str]]:
        """(head without its closing brace, personal row per runner) — as Room._standings."""
        from server.rooms import frames

        self.dirty = False
        self.tick += 1
        rows = self.live.standings(self.registered)
        head = {
            "type": "standings",
            "epoch": "peer",
            "as_of_seq": 1,
            "tick": self.tick,
            "at": round(time.time(), 3),
            "count": len(rows),
            "leaders": [frames.standing_row(s) for s in rows[: frames.LEADERS]],
        }
        text = orjson.dumps(head).decode()[:-1]
        personal = {}
        for s in rows:
            row = frames.standing_row(s)
            row["echo"] = self.echo.get(s.runner_id)
            personal[s.runner_id] = orjson.dumps(row).decode()
        return text, personal


async def every(period: float, work: Any) -> None:
    """Call `work()` at a fixed rate (deadlines `k * period` from the first, as the room's
    ticker keeps them), skipping the ticks a slow `work` overran instead of drifting."""
    nxt = time.monotonic() + period
    while True:
        await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        await work()
        nxt += period
        now = time.monotonic()
        if nxt < now:
            nxt += math.ceil((now - nxt) / period) * period


def naive_app(runners: int, tick_hz: float) -> Any:
    """A FastAPI room as a first version would be written: a ticker at `tick_hz` computes the
    standings once and awaits `send_text` to each client in turn (no queues: one slow socket
    holds up everyone after it)."""
    from fastapi import FastAPI, WebSocket, WebSocketDisconnect

    from server.rooms.protocol import ControlStart, GpsFrame, decode

    # FastAPI resolves the (postponed) annotations below from the module's globals
    globals()["WebSocket"] = WebSocket
    race = PeerRace(runners)
    clients: dict[WebSocket, str] = {}

    async def send_all(text: str, personal: dict[str, str] | None) -> None:
        for ws, rid in list(clients.items()):
            you = personal.get(rid) if personal else None
            try:
                await ws.send_text(text + (',"you":' + you + "}" if you else "}"))
            except Exception:
                clients.pop(ws, None)

    async def tick() -> None:
        if race.dirty and race.live is not None:
            await send_all(*race.standings())

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        ticker = asyncio.create_task(every(1.0 / tick_hz, tick))
        yield
        ticker.cancel()

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/ws/rooms/{room_id}")
    async def room(ws: WebSocket, room_id: str) -> None:
        await ws.accept()
        role, rid = race.role_of(orjson.loads(await ws.receive_text())["token"])
        await ws.send_text(race.welcome(rid, role))
        clients[ws] = rid
        try:
            while True:
                frame = decode(await ws.receive_text())
                if isinstance(frame, GpsFrame) and race.live is not None:
                    race.gps(rid, frame)
                elif isinstance(frame, ControlStart):
                    countdown = race.start()
                    await send_all(countdown[:-1], None)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            clients.pop(ws, None)

    return app


async def broadcast_server(port: int, runners: int, tick_hz: float) -> None:
    """websockets server; standings at `tick_hz` with websockets.broadcast()."""
    from websockets.asyncio.server import broadcast, serve

    from server.rooms.protocol import ControlStart, GpsFrame, decode

    race = PeerRace(runners)
    runner_conns: dict[str, Any] = {}
    others: set[Any] = set()

    async def handler(ws: Any) -> None:
        role, rid = race.role_of(orjson.loads(await ws.recv())["token"])
        await ws.send(race.welcome(rid, role))
        if role == "runner":
            runner_conns[rid] = ws
        else:
            others.add(ws)
        try:
            async for text in ws:
                frame = decode(text)
                if isinstance(frame, GpsFrame) and race.live is not None:
                    race.gps(rid, frame)
                elif isinstance(frame, ControlStart):
                    broadcast(set(runner_conns.values()) | others, race.start())
        finally:
            runner_conns.pop(rid, None) if role == "runner" else others.discard(ws)

    async def tick() -> None:
        if race.dirty and race.live is not None:
            text, personal = race.standings()
            broadcast(others, text + "}")  # spectators: one frame for all
            for rid, ws in list(runner_conns.items()):  # runners: their own row
                you = personal.get(rid)
                broadcast([ws], text + (',"you":' + you + "}" if you else "}"))

    async with serve(handler, "127.0.0.1", port, compression=None, max_size=64 * 1024):
        await every(1.0 / tick_hz, tick)


def peer_main(args: argparse.Namespace) -> None:
    import uvloop

    if args.peer == "naive":
        import uvicorn

        uvicorn.run(
            naive_app(args.runners, args.tick_hz),
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            ws_max_size=64 * 1024,
        )
    else:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(broadcast_server(args.port, args.runners, args.tick_hz))


# --------------------------------------------------------------------------------------------
# orchestration (the parent)


@dataclass
class Config:
    name: str  # retrorun / naive / broadcast
    runners: int
    tick_hz: float
    seconds: float
    warmup: float = 5.0
    drain: float = 3.0
    spectators: int | None = None  # None: as many as runners

    @property
    def watchers(self) -> int:
        return self.runners if self.spectators is None else self.spectators

    @property
    def label(self) -> str:
        return f"{self.name} ({self.tick_hz:g} Hz)"


SECRET = "bench-rooms-" + secrets.token_hex(24)


async def _retrorun_setup(
    db_url: str, port: int, n: int, spectators: int | None = None
) -> tuple[str, list[tuple[str, str, int]]]:
    """Accounts (moderator, N runners, the spectators: N unless given), a race via REST, N
    registrations."""
    from datetime import UTC, datetime, timedelta

    import httpx
    from sqlalchemy import insert

    from game import races
    from game.events import fold
    from server.commands import load_state
    from server.security import hash_password, issue_token
    from server.store.db import create_engine
    from server.store.event_store import EventStore, NewEvent
    from server.store.tables import Runner

    now = datetime.now(UTC)
    pw = hash_password("backwards!")
    engine = create_engine(db_url)
    store = EventStore(engine)
    try:
        ids = {"moderator": [], "runner": [], "spectator": []}  # type: dict[str, list[str]]
        rows = []
        for kind, count in (
            ("moderator", 1),
            ("runner", n),
            ("spectator", n if spectators is None else spectators),
        ):
            for i in range(count):
                rid = f"{kind[:3]}-{i:05d}-{secrets.token_hex(4)}"
                handle = f"b{kind[:1]}{i}_{secrets.token_hex(3)}"
                rows.append(
                    {
                        "id": rid,
                        "handle": handle,
                        "handle_key": handle,
                        "password_hash": pw,
                        "role": "moderator" if kind == "moderator" else "runner",
                        "created_at": now,
                        "token_generation": 0,
                        "failed_logins": 0,
                        "banned": False,
                        "tz": "UTC",
                    }
                )
                ids[kind].append(rid)
        async with engine.begin() as conn:
            await conn.execute(insert(Runner.__table__), rows)  # type: ignore[attr-defined]
        tok = {r: issue_token(SECRET, r, 0, 3 * 3600, now)[0] for v in ids.values() for r in v}
        mod = ids["moderator"][0]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            resp = await http.post(
                "/api/v1/races",
                headers={"Authorization": f"Bearer {tok[mod]}"},
                json={
                    "title": "Bench room",
                    "distance_m": RACE_DISTANCE_M,
                    "scheduled_at": (now + timedelta(hours=1)).isoformat(),
                    "capacity": max(1, n),
                },
            )
            resp.raise_for_status()
            race_id = resp.json()["id"]
        # N registrations through the race rules, appended at once (REST would reload the whole
        # stream per registration: O(N^2) setup time for the ramp)
        stream = f"race-{race_id}"
        state, version = await load_state(store, stream, races)
        events: list[Any] = []
        for rid in ids["runner"]:
            new = races.decide(state, races.Register(rid), datetime.now(UTC))
            state = fold(races.evolve, state, new)
            events += new
        if events:
            await store.append(
                stream, version, [NewEvent.of(e) for e in events], meta={"actor": "bench"}
            )
        clients = [("moderator", tok[mod], -1)]
        clients += [("runner", tok[r], i) for i, r in enumerate(ids["runner"])]
        clients += [("spectator", tok[s], -1) for s in ids["spectator"]]
        return race_id, clients
    finally:
        store.close()
        await engine.dispose()


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def _stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


#: The retrorun server command (--server-cmd: A/B a patched server; it gets --host and --port).
SERVER_CMD = [str(VENV_BIN / "retrorun"), "serve"]
PROFILE: dict[str, Any] = {}  # --py-spy BIN --profile-dir DIR: sample the server in the window
#: CPU affinity (--no-pin: none): the server on core 0, the load generator on the others.
PIN: dict[str, set[int]] = {}


def pin_cores(enabled: bool) -> None:
    """Give the server (and the peers) core 0 and the generator the rest, when the machine has
    two cores or more and the platform can pin; this process goes with the generator."""
    PIN.clear()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if enabled and len(cores) >= 2:
        PIN.update(server={cores[0]}, generator=set(cores[1:]))
        os.sched_setaffinity(0, PIN["generator"])


def _pin_server() -> None:  # Popen(preexec_fn=...): runs in the child before exec
    os.sched_setaffinity(0, PIN["server"])


def run_config(cfg: Config, workers: int, seed: int, tmp: Path) -> dict[str, Any]:
    port = free_port()
    log = open(tmp / f"{cfg.name}-{cfg.runners}-{cfg.tick_hz:g}.log", "wb")  # noqa: SIM115
    if cfg.name == "retrorun":
        db = tmp / f"rooms-{cfg.runners}-{cfg.tick_hz:g}-{secrets.token_hex(3)}.db"
        db_url = f"sqlite:///{db}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RETRORUN_")},
            "RETRORUN_DATABASE_URL": db_url,
            "RETRORUN_ROOM_TICK_HZ": f"{cfg.tick_hz:g}",
            "RETRORUN_RATE_LIMITS_ENABLED": "false",
            "RETRORUN_SECRET_KEY": SECRET,
        }
        cmd = [*SERVER_CMD, "--host", "127.0.0.1", "--port", str(port)]
    else:
        env = dict(os.environ)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--peer", cfg.name]
        cmd += ["--port", str(port), "--runners", str(cfg.runners), "--tick-hz", str(cfg.tick_hz)]
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        preexec_fn=_pin_server if PIN else None,  # this process starts no threads
    )
    procs: list[Any] = []
    result: dict[str, Any] = {"config": cfg.label, "name": cfg.name, "runners": cfg.runners}
    result["tick_hz"] = cfg.tick_hz
    try:
        _wait_port(port, proc, 60.0)
        if cfg.name == "retrorun":
            race_id, clients = asyncio.run(_retrorun_setup(db_url, port, cfg.runners, cfg.watchers))
        else:
            race_id = "bench"
            clients = [("moderator", "moderator:0", -1)]
            clients += [("runner", f"runner:{i}", i) for i in range(cfg.runners)]
            clients += [("spectator", f"spectator:{i}", -1) for i in range(cfg.watchers)]
        time.sleep(1.0)  # let the server settle before the baseline
        rss_base = proc_rss_kib(proc.pid)
        url = f"ws://127.0.0.1:{port}/ws/rooms/{race_id}"
        seconds_needed = COUNTDOWN_S + cfg.warmup + cfg.seconds + cfg.drain + 30.0
        ctx = mp.get_context("spawn")
        parts: list[list[tuple[str, str, int]]] = [[] for _ in range(workers)]
        parts[0].append(clients[0])  # the moderator
        for i, c in enumerate(clients[1:]):
            parts[i % workers].append(c)
        pipes = []
        for w in range(workers):
            parent, child = ctx.Pipe()
            spec = {"url": url, "clients": parts[w], "seed": seed, "seconds_needed": seconds_needed}
            spec["cpus"] = PIN.get("generator")
            p = ctx.Process(target=worker_entry, args=(child, spec), daemon=True)
            p.start()
            procs.append(p)
            pipes.append(parent)
        connected = 0
        deadline = time.monotonic() + 60.0 + cfg.runners / 20.0
        for pipe in pipes:
            if not pipe.poll(max(0.1, deadline - time.monotonic())):
                raise RuntimeError("workers did not connect in time")
            msg = pipe.recv()
            if msg[0] != "connected":
                raise RuntimeError(f"worker failed: {msg}")
            connected += msg[1]
        result["sockets"] = connected
        rss_connected = proc_rss_kib(proc.pid)
        pipes[0].send(("start",))
        if not pipes[0].poll(20.0):
            raise RuntimeError("no countdown")
        msg = pipes[0].recv()
        if msg[0] != "gun" or msg[1] <= 0:
            raise RuntimeError(f"the race did not start: {msg}")
        gun = msg[1]
        measure_start = gun + cfg.warmup
        measure_end = measure_start + cfg.seconds
        stop = measure_end + cfg.drain
        go = {"gun": gun, "measure_start": measure_start, "measure_end": measure_end, "stop": stop}
        for pipe in pipes:
            pipe.send(("go", go))
        # server readings in the window (1 s samples: the peak second and the RSS peak)
        time.sleep(max(0.0, measure_start - time.time()))
        spy = None
        if PROFILE.get("bin"):
            out = Path(PROFILE["dir"]) / f"{cfg.name}-{cfg.runners}-{cfg.tick_hz:g}.txt"
            spy = subprocess.Popen(
                [
                    PROFILE["bin"],
                    "record",
                    "-p",
                    str(proc.pid),
                    "-d",
                    str(int(cfg.seconds)),
                    "-r",
                    "50",
                    "-f",
                    "raw",
                    "-o",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        sys0 = proc_times_s(proc.pid)[1]
        cpu0, busy0, rss_peak = proc_cpu_s(proc.pid), machine_busy(), 0
        t0 = time.monotonic()
        last_cpu, last_t, peak_cpu = cpu0, t0, 0.0
        for _ in range(int(cfg.seconds) + 2):
            nxt = min(measure_end - time.time(), 1.0)
            if nxt <= 0:
                break
            time.sleep(nxt)
            cpu_now, t = proc_cpu_s(proc.pid), time.monotonic()
            peak_cpu = max(peak_cpu, (cpu_now - last_cpu) / max(1e-6, t - last_t))
            last_cpu, last_t = cpu_now, t
            rss_peak = max(rss_peak, proc_rss_kib(proc.pid))
        cpu1, busy1, t1 = proc_cpu_s(proc.pid), machine_busy(), time.monotonic()
        sys1 = proc_times_s(proc.pid)[1]
        rss_end = proc_rss_kib(proc.pid)
        if spy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(15)
        results = []
        for pipe in pipes:
            if not pipe.poll(cfg.drain + 60.0):
                raise RuntimeError("a worker did not report")
            msg = pipe.recv()
            if msg[0] != "result" or msg[1].get("aborted"):
                raise RuntimeError(f"worker failed: {str(msg)[:300]}")
            results.append(msg[1])
        lat = sorted(x for r in results for x in r["latencies"])
        lost = sum(r["lost"] for r in results)
        total = len(lat) + lost
        loop_lags = sorted(x for r in results for x in r["loop_lags"])
        send_lags = sorted(x for r in results for x in r["send_lags"])
        gen_cpu = [r["cpu_s"] / cfg.seconds for r in results]
        stats = [r["stats"] for r in results]

        def merged(key: str) -> dict[str, int]:
            out: dict[str, int] = {}
            for s in stats:
                for k, v in s[key].items():
                    out[k] = out.get(k, 0) + v
            return out

        runners_live = sum(r["runners"] for r in results)
        spect_live = sum(r["spectators"] for r in results)
        wall = t1 - t0
        result.update(
            {
                "fixes": total,
                "lost": lost,
                "p50": pct(lat, 50, total),
                "p90": pct(lat, 90, total),
                "p99": pct(lat, 99, total),
                "max": lat[-1] if lat else float("nan"),
                "server_cpu": 100.0 * (cpu1 - cpu0) / wall,
                "server_sys": 100.0 * (sys1 - sys0) / wall,  # of it in the kernel (sends)
                "server_cpu_peak": 100.0 * peak_cpu,
                "rss_base_mib": rss_base / 1024,
                "rss_connected_mib": rss_connected / 1024,
                "rss_end_mib": rss_end / 1024,
                "kib_per_conn": (max(rss_end, rss_peak) - rss_base) / max(1, connected),
                "gen_cpu_total": 100.0 * sum(gen_cpu),
                "gen_cpu_max": 100.0 * max(gen_cpu),
                "loop_lag_p99": pct(loop_lags, 99),
                "send_lag_p99": pct(send_lags, 99),
                "machine_busy": 100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
                "runner_hz": sum(s["standings_runner_window"] for s in stats)
                / max(1, runners_live)
                / cfg.seconds,
                "spectator_hz": sum(s["standings_spectator_window"] for s in stats)
                / max(1, spect_live)
                / cfg.seconds,
                "runner_frame_b": sum(s["standings_runner_bytes"] for s in stats)
                / max(1, sum(s["standings_runner_window"] for s in stats)),
                "spectator_frame_b": sum(s["standings_spectator_bytes"] for s in stats)
                / max(1, sum(s["standings_spectator_window"] for s in stats)),
                "sent_per_s": sum(s["sent_window"] for s in stats) / cfg.seconds,
                "acks": sum(s["acks"] for s in stats),
                "errors": merged("errors"),
                "closes": merged("closes"),
                "connect_failed": sum(s["connect_failed"] for s in stats),
                "stopped_early": sum(s["stopped_early"] for s in stats),
                "samples": [x for s in stats for x in s["error_samples"]][:5],
                "workers": workers,
            }
        )
        gen_cores = len(PIN.get("generator") or ()) or os.cpu_count() or 1
        result["gen_ok"] = (
            result["gen_cpu_max"] < 100.0 * GEN_CPU_LIMIT
            and result["gen_cpu_total"] < 100.0 * GEN_CPU_LIMIT * gen_cores
            and result["loop_lag_p99"] <= GEN_LOOP_LAG_P99_MS
            and result["send_lag_p99"] <= GEN_SEND_LAG_P99_MS
        )
        return result
    except Exception as exc:
        log.flush()
        tail = (tmp / log.name).read_bytes()[-1500:] if Path(log.name).exists() else b""
        raise RuntimeError(f"{exc}; server log tail: {tail.decode(errors='replace')}") from exc
    finally:
        for p in procs:
            p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join(2.0)
        _stop(proc)
        log.close()


def fmt_ms(v: float) -> str:
    if math.isinf(v):
        return "> end"
    if math.isnan(v):
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def print_result(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"  {r['config']} N={r['runners']}: FAILED {r['error']}", flush=True)
        return
    print(
        f"  {r['config']:<18} N={r['runners']:<5} p50={fmt_ms(r['p50'])} p99={fmt_ms(r['p99'])}"
        f" max={fmt_ms(r['max'])} ms lost={r['lost']}/{r['fixes']}"
        f" server cpu={r['server_cpu']:.0f}% (peak {r['server_cpu_peak']:.0f}%)"
        f" rss/conn={r['kib_per_conn']:.1f} KiB gen cpu={r['gen_cpu_total']:.0f}%"
        f" (max worker {r['gen_cpu_max']:.0f}%) loop lag p99={r['loop_lag_p99']:.1f} ms"
        f" standings/s runner={r['runner_hz']:.2f} spect={r['spectator_hz']:.2f}"
        f" gen_ok={r['gen_ok']} closes={r['closes']} errors={r['errors']}",
        flush=True,
    )
    if r["samples"]:
        print(f"    samples: {r['samples']}", flush=True)


def safe_run(cfg: Config, workers: int, seed: int, tmp: Path) -> dict[str, Any]:
    try:
        r = run_config(cfg, workers, seed, tmp)
    except Exception as exc:
        r = {"config": cfg.label, "name": cfg.name, "runners": cfg.runners, "error": repr(exc)}
        r["tick_hz"] = cfg.tick_hz
    print_result(r)
    return r


# --------------------------------------------------------------------------------------------
# report


def versions() -> str:
    out = [f"Python {platform.python_version()}"]
    for pkg in ("uvicorn", "uvloop", "websockets", "fastapi", "starlette", "orjson"):
        with contextlib.suppress(md.PackageNotFoundError):
            out.append(f"{pkg} {md.version(pkg)}")
    return ", ".join(out)


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def git_head() -> str:
    """The short commit measured, and whether tracked files differed from it."""

    def git(*args: str) -> str:
        cmd = ["git", "-C", str(ROOT), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()

    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short", "HEAD") + (" with uncommitted changes" if dirty else "")
    return "unknown commit"


def cores_text(cores: set[int] | None) -> str:
    return ",".join(str(c) for c in sorted(cores or ()))


def render(res: list[dict[str, Any]], ramp: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [HEADING, ""]
    pinned = (
        f"the server pinned to core {cores_text(PIN['server'])} and the generator to core "
        f"{cores_text(PIN['generator'])}"
        if PIN
        else "nothing pinned (--no-pin)"
    )
    lines.append(
        f"`{meta['command']}` at {meta['commit']}, {meta['date']} — one room, N runners sending "
        "honest 1 Hz phone fixes (`game.generate`, open loop, each on its own phase) plus N "
        f"spectators; {meta['seconds']:g} s measured per config after a {meta['warmup']:g} s "
        f"warm-up; load generator in {meta['workers']} processes, {pinned}. Latency = from a gps "
        "frame's scheduled send time to the first standings frame whose `you.echo` reflects it; "
        "fixes never reflected count as lost and rank above every latency (`> end`). Server CPU "
        "and RSS from /proc/<pid> of the server process; KiB/conn = (the larger of the RSS at "
        "the end and its 1 s peak - RSS before the first socket) / sockets. Frame bytes: the mean "
        "standings frame a runner (leaders and their own row) and a spectator (leaders) received. "
        "A run is valid when no generator process used 90% of a core, all of them together less "
        "than 90% of the generator's cores, and the generator's loop lag and send lag p99 stayed "
        f"within {GEN_LOOP_LAG_P99_MS:g} ms."
    )
    lines.append("")
    lines.append(
        "| server | N | sockets | p50 ms | p90 ms | p99 ms | max ms | lost | standings/s "
        "runner / spectator | frame B runner / spectator | server CPU % (peak 1 s) | of it "
        "kernel % | RSS MiB base → end | KiB/conn | generator CPU % (max worker) | gen loop / "
        "send lag p99 ms | machine busy % | valid |"
    )
    lines.append("|" + "---|" * 18)
    for r in res + [x for x in ramp if x not in res]:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['runners']:,} | failed: {r['error'][:120]} |")
            continue
        lines.append(
            f"| {r['config']} | {r['runners']:,} | {r['sockets']:,} | {fmt_ms(r['p50'])} | "
            f"{fmt_ms(r['p90'])} | {fmt_ms(r['p99'])} | {fmt_ms(r['max'])} | "
            f"{r['lost']:,} / {r['fixes']:,} | {r['runner_hz']:.2f} / {r['spectator_hz']:.2f} | "
            f"{r['runner_frame_b']:,.0f} / {r['spectator_frame_b']:,.0f} | "
            f"{r['server_cpu']:.0f} ({r['server_cpu_peak']:.0f}) | {r.get('server_sys', 0):.0f} | "
            f"{r['rss_base_mib']:.0f} → {r['rss_end_mib']:.0f} | {r['kib_per_conn']:.1f} | "
            f"{r['gen_cpu_total']:.0f} ({r['gen_cpu_max']:.0f}) | {r['loop_lag_p99']:.1f} / "
            f"{r['send_lag_p99']:.1f} | {r['machine_busy']:.0f} | "
            f"{'yes' if r['gen_ok'] else 'no (generator)'} |"
        )
    lines.append("")
    target = next(
        (r for r in res if r["name"] == "retrorun" and r["tick_hz"] == 4 and "error" not in r),
        None,
    )
    if target is not None:
        n = target["runners"]
        lines.append(f"Targets (retrorun, standings at 4 Hz, N={n:,}):")
        lines.append("")
        lines.append("| target | result | met |")
        lines.append("|---|---|---|")
        lines.append(
            f"| p50 ≤ {TARGETS['p50']:g} ms | {fmt_ms(target['p50'])} ms | "
            f"{yes(target['p50'] <= TARGETS['p50'])} |"
        )
        lines.append(
            f"| p99 ≤ {TARGETS['p99']:g} ms | {fmt_ms(target['p99'])} ms | "
            f"{yes(target['p99'] <= TARGETS['p99'])} |"
        )
        lines.append(
            f"| server ≤ {TARGETS['cpu']:g}% of one core | {target['server_cpu']:.0f}% | "
            f"{yes(target['server_cpu'] <= TARGETS['cpu'])} |"
        )
        lines.append(
            f"| ≤ {TARGETS['kib']:g} KiB per connection | {target['kib_per_conn']:.1f} KiB | "
            f"{yes(target['kib_per_conn'] <= TARGETS['kib'])} |"
        )
        if ramp:
            knee = meta.get("knee") or 0
            lines.append(
                f"| knee (p99 ≤ {KNEE_P99_MS:g} ms) ≥ 3,000 runners | {meta.get('knee_text', '-')} | "
                f"{yes(knee >= 3000)} |"
            )
        lines.append("")
    if ramp:
        lines.append(
            f"Ramp (retrorun, 4 Hz, {meta.get('ramp_seconds', 0):g} s measured per step after a "
            f"3 s warm-up, a fresh server each; "
            f"{meta.get('ramp_watchers') or 'N'} spectators): from N={meta['n']:,} up until "
            "p99 passes "
            f"{KNEE_P99_MS:g} ms, or down until it no longer does (the rows after the first "
            f"{len(res)}). {meta.get('knee_text', '')}"
        )
        lines.append("")
    lines.append(
        f"Machine: {os.cpu_count()} cores ({cpu_model()}), {pinned}; "
        f"{platform.system()} {platform.release()}; {versions()}. Load average "
        f"(1/5/15 min) at the start {meta['load_start']}, at the end {meta['load_end']}. "
        f"Wall clock {meta['wall_s'] / 60:.1f} min."
    )
    lines.append("")
    return "\n".join(lines)


FINDINGS = "### Findings"


def write_section(section: str, heading: str = HEADING) -> None:
    """Replace only the section under `heading` of docs/benchmarks.md (other tools own the
    other sections). Its `### Findings` subsection, written by hand, is kept: each finding
    names the run it reads."""
    text_now = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    block = section.rstrip("\n") + "\n\n"
    old = pattern.search(text_now)
    if old is not None and f"\n{FINDINGS}" in old.group(0):
        block += FINDINGS + old.group(0).split(f"\n{FINDINGS}", 1)[1].rstrip("\n") + "\n\n"
    if old is not None:
        new = pattern.sub(lambda _m: block, text_now, count=1)
    else:
        new = text_now.rstrip("\n") + "\n\n" + block
    tmp = DOCS.with_suffix(".md.tmp-rooms")
    tmp.write_text(new.rstrip("\n") + "\n")
    os.replace(tmp, DOCS)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--full", action="store_true", help="N=1000 and the ramp")
    parser.add_argument("--runners", type=int, default=None, help="N (default 200, --full 1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per config")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument(
        "--configs",
        default=None,
        help="comma list of retrorun4,retrorun1,naive,broadcast4,broadcast1",
    )
    parser.add_argument("--ramp", default=None, help="comma list of N for the ramp (--full)")
    parser.add_argument(
        "--ramp-spectators",
        type=int,
        default=None,
        help="spectators held at this count while the ramp adds runners (default: N spectators)",
    )
    parser.add_argument(
        "--ramp-seconds",
        type=float,
        default=None,
        help="measured seconds per ramp step (--seconds)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the server and the generator to cores"
    )
    parser.add_argument("--budget", type=float, default=None, help="wall-clock budget, s")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also dump raw results here")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--server-cmd", default=None, help="instead of `retrorun serve`")
    parser.add_argument("--py-spy", default=None, help="py-spy binary: profile the server")
    parser.add_argument("--profile-dir", type=Path, default=Path("."), help="py-spy output")
    # internal: run a peer server
    parser.add_argument("--peer", choices=["naive", "broadcast"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tick-hz", type=float, default=4.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        args.runners = args.runners or 0
        peer_main(args)
        return

    if args.server_cmd:
        SERVER_CMD[:] = args.server_cmd.split()
    if args.py_spy:
        PROFILE.update(bin=args.py_spy, dir=str(args.profile_dir.resolve()))
    pin_cores(not args.no_pin)
    commit = git_head()  # before the run: the code measured, not what changed during it
    t_start = time.monotonic()
    n = args.runners or (1000 if args.full else 200)
    budget = args.budget or (600.0 if args.full else 240.0)
    default_configs = "retrorun4,retrorun1,broadcast4,naive"
    if args.full:
        default_configs += ",broadcast1"
    names = (args.configs or default_configs).split(",")
    table = {
        "retrorun4": ("retrorun", 4.0),
        "retrorun1": ("retrorun", 1.0),
        "broadcast4": ("broadcast", 4.0),
        "broadcast1": ("broadcast", 1.0),
        "naive": ("naive", 4.0),
    }
    load_start = loadavg()
    print(f"{os.cpu_count()} cores, load average {load_start}; N={n}", flush=True)
    res: list[dict[str, Any]] = []
    ramp: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"n": n}
    with tempfile.TemporaryDirectory(prefix="bench-rooms-") as d:
        tmp = Path(d)
        per_config = 20.0 + args.warmup + args.seconds + COUNTDOWN_S + 3.0 + n / 40.0
        for name in names:
            if time.monotonic() - t_start + per_config > budget:
                print(f"  skipped {name}: over the {budget:.0f} s budget", flush=True)
                continue
            kind, hz = table[name]
            res.append(
                safe_run(
                    Config(kind, n, hz, args.seconds, args.warmup), args.workers, args.seed, tmp
                )
            )
        if args.full or args.ramp:
            base = next(
                (r for r in res if r["name"] == "retrorun" and r["tick_hz"] == 4 and "p99" in r),
                None,
            )
            up = base is None or (base["p99"] <= KNEE_P99_MS and base["gen_ok"])
            if args.ramp:
                steps = [int(x) for x in args.ramp.split(",")]
            elif up:
                steps = [1500, 2000, 3000, 4000, 5000]
            else:  # already past the knee at N: walk down to it
                steps = [750, 500, 350, 250]
            last_ok = base["runners"] if base and up and "p99" in base else None
            first_bad = None if up or base is None else base["runners"]
            ramp_s, ramp_warm = args.ramp_seconds or args.seconds, 3.0
            meta["ramp_seconds"] = ramp_s
            meta["ramp_watchers"] = (
                f"{args.ramp_spectators:,}" if args.ramp_spectators is not None else None
            )
            for step in steps:
                cost = 25.0 + ramp_warm + ramp_s + COUNTDOWN_S + 3.0 + step / 25.0
                if time.monotonic() - t_start + cost > budget:
                    print(
                        f"  ramp stopped before N={step}: over the {budget:.0f} s budget",
                        flush=True,
                    )
                    meta["ramp_cut"] = step
                    break
                step_cfg = Config(
                    "retrorun", step, 4.0, ramp_s, ramp_warm, spectators=args.ramp_spectators
                )
                r = safe_run(step_cfg, args.workers, args.seed, tmp)
                ramp.append(r)
                ok = "p99" in r and r["p99"] <= KNEE_P99_MS
                if "p99" in r and not r["gen_ok"]:
                    meta["gen_bound"] = step
                if up:
                    if not ok:
                        first_bad = step
                        break
                    if "gen_bound" in meta:
                        break
                    last_ok = step
                else:
                    if ok:
                        last_ok = step
                        break
                    first_bad = step
            meta["knee"] = last_ok
            text = (
                f"Knee: p99 ≤ {KNEE_P99_MS:g} ms up to N={last_ok:,}"
                if last_ok
                else "Knee: not found"
            )
            if first_bad is not None:
                text += f"; p99 passed it at N={first_bad:,}."
            elif "ramp_cut" in meta:
                text += f"; the ramp stopped before N={meta['ramp_cut']:,} (time budget)."
            else:
                text += "."
            if "gen_bound" in meta:
                text += (
                    f" At N={meta['gen_bound']:,} the generator itself was past its limits "
                    "(see 'valid'), so that step measures the machine as much as the server."
                )
            meta["knee_text"] = text
            print(text, flush=True)
    load_end = loadavg()
    cmd = ".venv/bin/python bench/bench_rooms.py" + (
        " " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""
    )
    meta.update(
        {
            "command": cmd,
            "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "seconds": args.seconds,
            "warmup": args.warmup,
            "workers": args.workers,
            "load_start": load_start,
            "load_end": load_end,
            "wall_s": time.monotonic() - t_start,
        }
    )
    section = render(res, ramp, meta)
    print()
    print(section)
    if args.json:
        args.json.write_text(
            json.dumps({"results": res, "ramp": ramp, "meta": meta}, indent=1, default=str)
        )
    if args.no_write or not any("p99" in r for r in res):
        print("(docs/benchmarks.md left alone: --no-write or nothing ran)")
    else:
        write_section(section)
        print(f"(written to {DOCS.relative_to(ROOT)} under '{HEADING}')")


if __name__ == "__main__":
    main()
