"""HTTP leaderboard benchmark: `GET /api/v1/leaderboards/xp:all?limit=100` on one worker.

Side by side in one run, with the same load generator (wrk, 1 thread, 16 connections, 15 s):

  retrorun-sql     `retrorun serve` (one uvicorn worker) on SQLite, board in the SQL backend
  retrorun-redis   the same server with RETRORUN_REDIS_URL: the board in Redis sorted sets
  retrorun-redis, If-None-Match
                   the Redis server again, every request sending the page's current ETag: what a
                   phone polling an unchanged board costs (304, no body)
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
from server.boards.redis import DEFAULT_PREFIX, RedisLeaderboards  # noqa: E402
from server.boards.sql import SqlLeaderboards  # noqa: E402
from server.store.db import create_engine  # noqa: E402
from server.store.migrate import upgrade  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Leaderboards over HTTP"
REDIS_DB_URL = "redis://127.0.0.1:6379/13"
PATH = "/api/v1/leaderboards/xp:all?limit=100"
#: The boards keeper's "boards were built" sentinel: without it the server would take the loaded
#: board for one Redis lost and rebuild it from the (empty) event log, serving an empty board.
SENTINEL = f"{DEFAULT_PREFIX}-meta:built"


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
        await redis.set(SENTINEL, "bench_http_boards")
    finally:
        await redis.aclose()


async def flush_redis() -> None:
    redis = Redis.from_url(REDIS_DB_URL)
    try:
        await redis.flushdb()
    finally:
        await redis.aclose()


def fetch(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET over a fresh connection: status, headers (lower-case names), body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        for _ in range(10_000):  # bounded: a page is a few kB
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def wait_up(port: int, path: str, total: int, limit_s: float = 30.0) -> dict[str, str]:
    """Wait for a 200 with the whole board behind it; returns the response headers."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            status, headers, body = fetch(port, path)
            if status == 200:
                served = json.loads(body)["total"]
                if served != total:  # e.g. a board wiped on start-up: measuring it is pointless
                    raise RuntimeError(f"server on {port} serves a board of {served}, not {total}")
                return headers
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on {port} did not answer {path}")


def wrk(port: int, seconds: int, headers: tuple[str, ...] = ()) -> dict[str, float]:
    extra = [arg for h in headers for arg in ("-H", h)]
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            "-c16",
            f"-d{seconds}s",
            "--latency",
            *extra,
            f"http://127.0.0.1:{port}{PATH}",
        ],
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


def run_server(
    cmd: list[str], env: dict[str, str], port: int, seconds: int, total: int, *, revalidate: bool
) -> list[dict[str, float]]:
    """wrk against one server; with `revalidate`, a second run sending the page's ETag back."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        headers = wait_up(port, PATH, total)
        runs = [()] + ([(f"If-None-Match: {headers['etag']}",)] if revalidate else [])
        results = []
        for sent in runs:
            before = cpu_s(proc.pid)
            result = wrk(port, seconds, sent)
            result["cpu"] = (cpu_s(proc.pid) - before) / seconds * 100
            results.append(result)
        return results
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
    load_before = os.getloadavg()
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
        n = args.entries
        [results["retrorun-sql"]] = run_server(cmd, base, port, args.seconds, n, revalidate=False)
        body = Path(tmp) / "page.json"
        asyncio.run(load_redis(rows))
        try:
            port = free_port()
            env = {**base, "RETRORUN_REDIS_URL": REDIS_DB_URL}
            cmd = [exe, "serve", "--port", str(port)]
            full, revalidated = run_server(cmd, env, port, args.seconds, n, revalidate=True)
            results["retrorun-redis"] = full
            results["retrorun-redis, If-None-Match (304)"] = revalidated
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
        [results["starlette-static (peer)"]] = run_server(
            peer, base, port, args.seconds, n, revalidate=False
        )

    load = os.getloadavg()
    lines = [
        HEADING,
        "",
        f"`.venv/bin/python bench/bench_http_boards.py --entries {args.entries} --seconds {args.seconds}`"
        f" — {os.cpu_count()} cores, 1-minute load average {load_before[0]:.2f} before and {load[0]:.2f} after"
        f" (other engineers' suites share the cores); wrk 1 thread, 16 connections,"
        f" {args.seconds} s per server, `GET {PATH}` on a board of {args.entries:,} runners, one uvicorn worker.",
        "",
        "| server | requests/s | p50 ms | p99 ms | server CPU % | requests per CPU-second | non-2xx/3xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['rps']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['cpu']:.0f} |"
            f" {r['rps'] / max(r['cpu'], 1) * 100:,.0f} | {r['errors']:.0f} |"
        )
    peer = results["starlette-static (peer)"]
    ours = {name: r for name, r in results.items() if "peer" not in name}
    lines += [
        "",
        "Requests per CPU-second is requests/s over the server's own CPU share: when other work",
        "on the 2 cores leaves a server half a core, its requests/s halves but this stays put, so",
        "it compares across runs. Share of the peer's requests/s, and of its requests per",
        "CPU-second, in this run: "
        + "; ".join(
            f"{name} {r['rps'] / peer['rps']:.1%} and "
            f"{r['rps'] / max(r['cpu'], 1) / (peer['rps'] / max(peer['cpu'], 1)):.1%}"
            for name, r in ours.items()
        )
        + ".",
        "",
        "Targets in this run (≥ 1,500 requests/s and p99 ≤ 50 ms): "
        + "; ".join(
            f"{name} {'met' if r['rps'] >= 1500 and r['p99'] <= 50 else 'NOT met'}"
            for name, r in ours.items()
        )
        + ".",
    ]
    lines += [
        "",
        "The peer serves the same bytes with no database, routing, middleware or serialisation: the",
        "distance to it is what RetroRun's own work costs. Pages are cached (rendered once per board",
        "change, or per second for handles), so in a profile of this load most of that is per-request",
        "framework work outside the board code: the request-id/metrics/access-log middleware and a",
        "second access-log line from uvicorn, the abuse-limits middleware, FastAPI's route matching",
        "over every router and its parameter solving. On Redis each request also waits for a shared",
        "version check (about one round trip per round-trip time per page, so a run ranked by",
        "another server is on the next page); on SQL a cached page costs no I/O. The p99 is set",
        "mostly outside the request path: a trace of this load (gc callbacks, asyncio slow-callback",
        "log) showed full (generation 2) collections of 90-250 ms about once a second, plus the",
        "server waiting for a core while other work holds both.",
        "",
    ]
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
        pattern = re.compile(rf"{re.escape(HEADING)}\n.*?(?=\n## |\Z)", re.S)
        text = (
            pattern.sub(lambda _m: table.rstrip("\n") + "\n", text)
            if pattern.search(text)
            else text.rstrip("\n") + "\n\n" + table
        )
        DOCS.write_text(text)


if __name__ == "__main__":
    main()
