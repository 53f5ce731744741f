"""HTTP leaderboard benchmark: `GET /api/v1/leaderboards/xp:all?limit=100` on one worker.

Side by side in one run, with the same load generator (wrk, 1 thread, 16 connections, 15 s):

  retrorun-sql     `retrorun serve` (one uvicorn worker) on SQLite, board in the SQL backend
  retrorun-redis   the same server with RETRORUN_REDIS_URL: the board in Redis sorted sets
  starlette-static the peer: a bare Starlette app on uvicorn returning the same page, precomputed
                   (no database, no middleware): the ceiling for this server stack

The board holds 100,000 runners. Each server is a subprocess on a loopback port; wrk runs on the
other core. Results go to docs/benchmarks.md under `## Leaderboards over HTTP`.

    apt-get install wrk   # once; Debian's package
    .venv/bin/python bench/bench_http_boards.py [--entries N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from game.ranking import Direction, Entry  # noqa: E402
from server.boards.redis import RedisLeaderboards  # noqa: E402
from server.boards.sql import SqlLeaderboards  # noqa: E402
from server.store.db import create_engine  # noqa: E402
from server.store.migrate import upgrade  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Leaderboards over HTTP"
REDIS_DB_URL = "redis://127.0.0.1:6379/13"
PATH = "/api/v1/leaderboards/xp:all?limit=100"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def entries(n: int) -> list[Entry]:
    return [Entry(f"runner-{i:07d}", float((i * 7919) % 50_000), i + 1) for i in range(n)]


async def load_sql(url: str, rows: list[Entry]) -> None:
    engine = create_engine(url)
    try:
        await SqlLeaderboards(engine).submit_many("xp:all", rows, direction=Direction.HIGHER)
    finally:
        await engine.dispose()


async def load_redis(rows: list[Entry]) -> None:
    redis = Redis.from_url(REDIS_DB_URL)
    try:
        await redis.flushdb()
        await RedisLeaderboards(redis).submit_many("xp:all", rows, direction=Direction.HIGHER)
    finally:
        await redis.aclose()


async def flush_redis() -> None:
    redis = Redis.from_url(REDIS_DB_URL)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


def wait_up(port: int, path: str, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(12).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on {port} did not answer {path}")


def wrk(port: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        assert m, out
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": ms("50%"),
        "p99": ms("99%"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_server(cmd: list[str], env: dict[str, str], port: int, seconds: int) -> dict[str, float]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_up(port, PATH)
        before = cpu_s(proc.pid)
        result = wrk(port, seconds)
        result["cpu"] = (cpu_s(proc.pid) - before) / seconds * 100
        return result
    finally:
        proc.terminate()
        proc.wait(timeout=20)


PEER = textwrap.dedent(
    """
    import sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    body = open(sys.argv[2], "rb").read()
    async def page(request):
        return Response(body, media_type="application/json")
    app = Starlette(routes=[Route("/api/v1/leaderboards/xp:all", page)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    exe = str(Path(sys.executable).with_name("retrorun"))
    rows = entries(args.entries)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/http.db"
        upgrade(db)
        asyncio.run(load_sql(db, rows))
        base = {
            **os.environ,
            "RETRORUN_DATABASE_URL": db,
            "RETRORUN_SECRET_KEY": "b" * 40,
            "RETRORUN_RATE_LIMITS_ENABLED": "false",
        }
        port = free_port()
        cmd = [exe, "serve", "--port", str(port)]
        results["retrorun-sql"] = run_server(cmd, base, port, args.seconds)
        body = Path(tmp) / "page.json"
        asyncio.run(load_redis(rows))
        try:
            port = free_port()
            env = {**base, "RETRORUN_REDIS_URL": REDIS_DB_URL}
            results["retrorun-redis"] = run_server(
                [exe, "serve", "--port", str(port)], env, port, args.seconds
            )
        finally:
            asyncio.run(flush_redis())
        port = free_port()
        page = {"board": "xp:all", "total": args.entries, "limit": 100, "offset": 0}
        page["entries"] = [
            {"rank": i + 1, "runner_id": e.runner_id, "handle": None, "score": e.score}
            for i, e in enumerate(rows[:100])
        ]
        body.write_bytes(json.dumps(page).encode())
        peer = [sys.executable, "-c", PEER, str(port), str(body)]
        results["starlette-static (peer)"] = run_server(peer, base, port, args.seconds)

    load = os.getloadavg()
    lines = [
        HEADING,
        "",
        f"`.venv/bin/python bench/bench_http_boards.py --entries {args.entries} --seconds {args.seconds}`"
        f" — {os.cpu_count()} cores, load average {load[0]:.2f} at the end; wrk 1 thread, 16 connections,"
        f" {args.seconds} s per server, `GET {PATH}` on a board of {args.entries:,} runners, one uvicorn worker.",
        "",
        "| server | requests/s | p50 ms | p99 ms | server CPU % | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['cpu']:.0f} | {r['errors']:.0f} |"
        )
    lines += [
        "",
        "Target: ≥ 1,500 requests/s with p99 ≤ 50 ms on one worker. The peer serves the same bytes",
        "with no database, routing, middleware or serialisation: the distance to it is what RetroRun's",
        "own work costs (request id, metrics, access log, board query, handle lookup, JSON encoding).",
        "",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
        pattern = re.compile(rf"{re.escape(HEADING)}\n.*?(?=\n## |\Z)", re.S)
        text = (
            pattern.sub(table.rstrip("\n"), text)
            if pattern.search(text)
            else text.rstrip("\n") + "\n\n" + table
        )
        DOCS.write_text(text)


if __name__ == "__main__":
    main()
