"""Drill room benchmark (issue 6): N participants in one coordination drill on loopback.

The server is `retrorun serve` in its own process (SQLite in a temp dir, rate limits off, a
throwaway secret key). Accounts are inserted into its database; the drill is created with
`POST /api/v1/drills` (one `switch_reaction` phase with the most switch cues it may hold, then a
5 s countdown) and started by the coach's `control {action: start, countdown_s: 5}`.

Load generator: `--workers` processes (multiprocessing, spawn), each an asyncio loop of raw
`websockets` clients. Every participant signs in, does 5 ping/pong exchanges reported with `sync`,
and then acks every scored cue with a reaction drawn uniformly from [250, 270) ms after the cue's
`at` on its own clock - a near-simultaneous burst of N acks per cue, the worst case for the room.

Measured:
- cue spread: for each cue frame, the last client's receive time minus the first client's
  (all clients, all processes, one machine clock); p50/p99/max over the cues. Also the fan-out
  delay: receive time - the moment the room announced the cue (`at` - 2 s), over all deliveries.
- acks: per scored cue, N acks; stored-ack latency = receive time of the `ack` reply (sent after
  the batch is committed) - the ack's send time; burst throughput = N / (last reply - first send).
- server CPU (utime + stime from /proc) over the drill, and generator health (worker CPU).

    .venv/bin/python bench/bench_drills.py            # N=500, 2 workers (~1.5 min)
    .venv/bin/python bench/bench_drills.py -n 100 --no-write

Results go to docs/benchmarks.md under `## Drills` (only that section is replaced; --no-write).
Every wait is bounded; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import platform
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SECRET = "bench-secret-" + "x" * 40
CUE_AHEAD_S = 2.0  # server.rooms.drill_room.CUE_AHEAD_S
LEAD_S = 5.0
SYNC_SAMPLES = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100.0 * (len(s) - 1))))]


# the load generator (one process)


async def _client(url: str, token: str, coach: bool, seed: int, out: dict[str, Any]) -> Any:
    import orjson
    from websockets.asyncio.client import connect

    rng = random.Random(seed)
    ws = await connect(url, compression=None, max_size=2**22, open_timeout=60)
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
    assert welcome["type"] == "welcome", welcome
    offset = 0.0
    if not coach:
        for k in range(SYNC_SAMPLES):
            t0 = time.time()
            await ws.send(orjson.dumps({"type": "ping", "t0": t0, "cid": f"p{k}"}).decode())
            while True:
                pong = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
                if pong["type"] == "pong":
                    break
            t3 = time.time()
            sync = {"type": "sync", "t0": t0, "t1": pong["t1"], "t2": pong["t2"], "t3": t3}
            await ws.send(orjson.dumps(sync).decode())
            while True:
                clock = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
                if clock["type"] == "clock":
                    offset = clock["offset"]
                    break
    recv_at: dict[int, float] = {}
    cue_at: dict[int, float] = {}
    sent: dict[int, float] = {}
    stored: dict[int, float] = {}
    errors: list[str] = []
    tasks: list[asyncio.Task[None]] = []

    async def ack(cue: dict[str, Any]) -> None:
        t = cue["at"] - offset + rng.uniform(0.250, 0.270)
        await asyncio.sleep(max(0.0, t - time.time()))
        sent[cue["id"]] = time.time()
        await ws.send(orjson.dumps({"type": "ack", "cue": cue["id"], "t": t}).decode())

    async def reader() -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                now = time.time()
                f = orjson.loads(raw)
                kind = f["type"]
                if kind == "cue":
                    recv_at[f["id"]] = now
                    cue_at[f["id"]] = f["at"]
                    if f["scored"] and not coach:
                        tasks.append(asyncio.create_task(ack(f)))
                elif kind == "ack":
                    stored[f["cue"]] = now
                elif kind == "error":
                    errors.append(f["code"])
                elif kind == "drill_results":
                    out["results"] = {"sync_score": f["sync_score"], "scores": len(f["scores"])}

    out.setdefault("clients", []).append(
        {"recv": recv_at, "cue_at": cue_at, "sent": sent, "stored": stored, "errors": errors}
    )
    return ws, reader, tasks


async def _worker_main(conn: Any, spec: dict[str, Any]) -> None:
    import orjson

    out: dict[str, Any] = {}
    opened = []
    for i, (token, coach) in enumerate(spec["clients"]):
        opened.append(await _client(spec["url"], token, coach, spec["seed"] + i, out))
    conn.send(("connected", len(opened)))
    readers = [asyncio.create_task(r()) for _, r, _ in opened]
    cpu0 = time.process_time()
    go = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    if go[0] == "start":
        coach_ws = next(ws for (ws, _, _), (_, c) in zip(opened, spec["clients"], strict=True) if c)
        frame = {"type": "control", "action": "start", "countdown_s": LEAD_S}
        await coach_ws.send(orjson.dumps(frame).decode())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*readers), spec["deadline_s"])
    for ws, _, tasks in opened:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await ws.close()
    out["cpu_s"] = time.process_time() - cpu0
    conn.send(("done", out))


def worker_entry(conn: Any, spec: dict[str, Any]) -> None:
    try:
        asyncio.run(_worker_main(conn, spec))
    except Exception as exc:  # report, never hang the parent
        conn.send(("failed", repr(exc)))


# setup and orchestration


async def _setup(db_url: str, port: int, n: int, phase_s: float) -> tuple[str, list[str], str]:
    from datetime import UTC, datetime

    import httpx
    from sqlalchemy import insert

    from server.security import hash_password, issue_token
    from server.store.db import create_engine
    from server.store.tables import Runner

    now = datetime.now(UTC)
    pw = hash_password("backwards!")
    rows, ids = [], []
    for i in range(n + 1):
        rid = f"drl-{i:05d}-{secrets.token_hex(4)}"
        handle = f"d{i}_{secrets.token_hex(3)}"
        rows.append(
            {
                "id": rid,
                "handle": handle,
                "handle_key": handle,
                "password_hash": pw,
                "role": "moderator" if i == 0 else "runner",
                "created_at": now,
                "token_generation": 0,
                "failed_logins": 0,
                "banned": False,
                "tz": "UTC",
            }
        )
        ids.append(rid)
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Runner.__table__), rows)  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
    tokens = [issue_token(SECRET, r, 0, 3 * 3600, now)[0] for r in ids]
    cues = int((phase_s - 2.0) // 2.0)
    phases = [
        {"move": "switch_reaction", "duration_s": phase_s, "switch_cues": min(20, cues)},
        {"move": "countdown", "duration_s": 5},
    ]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        r = await http.post(
            "/api/v1/drills",
            headers={"Authorization": f"Bearer {tokens[0]}"},
            json={"title": "Bench drill", "level": "advanced", "phases": phases},
        )
        r.raise_for_status()
        return r.json()["id"], tokens[1:], tokens[0]


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError("server did not start")


def run(n: int, workers: int, phase_s: float, seed: int, tmp: Path) -> dict[str, Any]:
    port = free_port()
    db_url = f"sqlite:///{tmp / 'drills.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RETRORUN_")},
        "RETRORUN_DATABASE_URL": db_url,
        "RETRORUN_RATE_LIMITS_ENABLED": "false",
        "RETRORUN_SECRET_KEY": SECRET,
        "RETRORUN_LOG_JSON": "false",
    }
    log = open(tmp / "server.log", "wb")  # noqa: SIM115
    cmd = [str(VENV_BIN / "retrorun"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    procs: list[Any] = []
    try:
        _wait_port(port, proc, 60.0)
        drill_id, tokens, coach = asyncio.run(_setup(db_url, port, n, phase_s))
        url = f"ws://127.0.0.1:{port}/ws/rooms/{drill_id}"
        parts: list[list[tuple[str, bool]]] = [[] for _ in range(workers)]
        parts[0].append((coach, True))
        for i, t in enumerate(tokens):
            parts[i % workers].append((t, False))
        deadline_s = LEAD_S + phase_s + 5.0 + 10.0 + 60.0
        ctx = mp.get_context("spawn")
        pipes = []
        for w in range(workers):
            parent, child = ctx.Pipe()
            spec = {"url": url, "clients": parts[w], "seed": seed * 1000 + w * 100_000}
            spec["deadline_s"] = deadline_s
            p = ctx.Process(target=worker_entry, args=(child, spec), daemon=True)
            p.start()
            procs.append(p)
            pipes.append(parent)
        for pipe in pipes:
            if not pipe.poll(60.0 + n / 10.0):
                raise RuntimeError("workers did not connect in time")
            msg = pipe.recv()
            if msg[0] != "connected":
                raise RuntimeError(f"worker failed: {msg}")
        cpu0, t0 = proc_cpu_s(proc.pid), time.monotonic()
        for k, pipe in enumerate(pipes):
            pipe.send(("start",) if k == 0 else ("wait",))
        outs = []
        for pipe in pipes:
            if not pipe.poll(deadline_s + 30.0):
                raise RuntimeError("workers did not finish in time")
            msg = pipe.recv()
            if msg[0] != "done":
                raise RuntimeError(f"worker failed: {msg}")
            outs.append(msg[1])
        server_cpu = proc_cpu_s(proc.pid) - cpu0
        wall = time.monotonic() - t0
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
    return summarise(outs, n, workers, server_cpu, wall)


def summarise(
    outs: list[dict[str, Any]], n: int, workers: int, server_cpu: float, wall: float
) -> dict[str, Any]:
    clients = [c for o in outs for c in o["clients"]]
    cue_ids = sorted({k for c in clients for k in c["recv"]})
    cue_at = {k: v for c in clients for k, v in c["cue_at"].items()}
    spreads, fanout, missing = [], [], 0
    for k in cue_ids:
        times = [c["recv"][k] for c in clients if k in c["recv"]]
        missing += len(clients) - len(times)
        spreads.append((max(times) - min(times)) * 1000.0)
        fanout += [(t - (cue_at[k] - CUE_AHEAD_S)) * 1000.0 for t in times]
    participants = [c for c in clients if c["sent"] or c["stored"] or not c["recv"] or True]
    acked_cues = sorted({k for c in participants for k in c["sent"]})
    latencies, bursts = [], []
    for k in acked_cues:
        sends = [c["sent"][k] for c in participants if k in c["sent"]]
        replies = [c["stored"][k] for c in participants if k in c["stored"]]
        latencies += [
            (c["stored"][k] - c["sent"][k]) * 1000.0
            for c in participants
            if k in c["stored"] and k in c["sent"]
        ]
        if replies:
            bursts.append(len(replies) / max(1e-6, max(replies) - min(sends)))
    errors: dict[str, int] = {}
    for c in clients:
        for e in c["errors"]:
            errors[e] = errors.get(e, 0) + 1
    acks_sent = sum(len(c["sent"]) for c in clients)
    acks_stored = sum(len(c["stored"]) for c in clients)
    results = next((o["results"] for o in outs if "results" in o), None)
    return {
        "participants": n,
        "workers": workers,
        "cues": len(cue_ids),
        "missing_deliveries": missing,
        "spread_p50": pct(spreads, 50),
        "spread_p99": pct(spreads, 99),
        "spread_max": max(spreads) if spreads else float("nan"),
        "fanout_p50": pct(fanout, 50),
        "fanout_p99": pct(fanout, 99),
        "acks_sent": acks_sent,
        "acks_stored": acks_stored,
        "ack_p50": pct(latencies, 50),
        "ack_p99": pct(latencies, 99),
        "burst_rate_p50": statistics.median(bursts) if bursts else float("nan"),
        "burst_rate_min": min(bursts) if bursts else float("nan"),
        "errors": errors,
        "server_cpu_s": server_cpu,
        "wall_s": wall,
        "worker_cpu_pct": [round(100.0 * o["cpu_s"] / wall) for o in outs],
        "results": results,
    }


def report(r: dict[str, Any]) -> str:
    cpu = r["server_cpu_s"]
    per_ack_ms = 1000.0 * cpu / max(1, r["acks_stored"])
    lines = [
        f"{r['participants']} participants in one drill, {r['workers']} load-generator processes,"
        f" {r['cues']} cue frames ({r['acks_sent']} acks sent, {r['acks_stored']} stored).",
        "",
        "| measure | p50 | p99 | max / note |",
        "|---|---|---|---|",
        f"| cue spread: last - first client receiving a cue frame | {r['spread_p50']:.1f} ms"
        f" | {r['spread_p99']:.1f} ms | {r['spread_max']:.1f} ms (target p99 <= 50 ms) |",
        f"| cue fan-out: receive - announce (`at` - 2 s), every delivery | {r['fanout_p50']:.1f} ms"
        f" | {r['fanout_p99']:.1f} ms | {r['missing_deliveries']} deliveries missing |",
        f"| ack send -> stored `ack` reply (batched commit) | {r['ack_p50']:.0f} ms"
        f" | {r['ack_p99']:.0f} ms | flush every 1 s or 500 acks |",
        f"| ack burst throughput: {r['participants']} acks / (last reply - first send)"
        f" | {r['burst_rate_p50']:,.0f} acks/s | - | slowest burst {r['burst_rate_min']:,.0f}"
        " acks/s |",
        "",
        f"Server CPU over the drill: {cpu:.1f} s in {r['wall_s']:.0f} s wall"
        f" ({100.0 * cpu / r['wall_s']:.0f}% of one core; {per_ack_ms:.2f} ms per stored ack,"
        " fan-out, pings and commits included). Load-generator CPU per worker:"
        f" {', '.join(f'{p}%' for p in r['worker_cpu_pct'])} of a core. Errors: {r['errors'] or 0}."
        f" Results: {r['results']}.",
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    section = "## Drills\n\n" + text.strip() + "\n"
    pattern = re.compile(r"^## Drills\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(doc):
        doc = pattern.sub(lambda _m: section + "\n", doc, count=1).rstrip() + "\n"
    else:
        doc = doc.rstrip() + "\n\n" + section
    path.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", "--participants", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--phase-s", type=float, default=30.0, help="switch_reaction phase length")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-drills-") as tmp:
        r = run(args.participants, args.workers, args.phase_s, args.seed, Path(tmp))
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    text = report(r)
    print(text)
    if not args.no_write:
        how = (
            "`.venv/bin/python bench/bench_drills.py` (server: `retrorun serve`, SQLite, its own"
            f" process; clients on the same machine: {machine}). Clients ack every scored cue"
            " 250-270 ms after it fired on their synced clock, so each cue brings a burst of"
            " near-simultaneous acks."
        )
        write_section(how + "\n\n" + text)


if __name__ == "__main__":
    main()
