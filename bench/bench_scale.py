"""Scale-out benchmark (issue 9): one live race of N runners (and N spectators) with the runners
spread over 1, 2 and 3 `retrorun serve` processes on PostgreSQL and Redis, against the single
process with the in-process backplane, in the same run.

Configurations, each on a fresh PostgreSQL database (the shared server on 127.0.0.1:5432) and,
for the Redis ones, an emptied throwaway `redis-server` this script starts on a free loopback port
(no persistence), so its CPU can be read:

  memory x1   one process, in-process backplane (no RETRORUN_REDIS_URL): the single-process peer
  redis x1    one process on the Redis backplane (every frame goes through Redis)
  redis x2    two processes: sockets spread over both, the room owned by one
  redis x3    three processes

The load generator is bench/bench_rooms.py's, imported (not copied): `--workers` processes (3 by
default, the same in every configuration), worker w connecting all its clients to process
w mod P, so runners and spectators are spread evenly over the processes. Open loop, 1 Hz per
runner; latency = receive time of the first standings frame whose `you.echo` reflects a fix -
the fix's scheduled send time (gps sent -> standings reflecting it); a fix never reflected by the
end of the window counts as lost. CPU: (utime + stime) over the measurement window of every
`retrorun serve` process, summed, in % of one core; also Redis's and the PostgreSQL backends'
of the bench database (by process title), sampled at the window's start and end.

    .venv/bin/python bench/bench_scale.py           # quick: N=200, 20 s per config (~4 min)
    .venv/bin/python bench/bench_scale.py --full    # N=1000 (~6 min)

Results go to docs/benchmarks.md under `## Scale-out` (only that section is replaced;
--no-write). Every loop is bounded in count and time; loopback only. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_rooms as br  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Scale-out"
PG_ADMIN = os.environ.get("RETRORUN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Config:
    backplane: str  # memory / redis
    processes: int
    runners: int
    seconds: float
    warmup: float = 5.0
    drain: float = 3.0

    @property
    def label(self) -> str:
        return f"{self.backplane} x{self.processes}"


# -- engines ---------------------------------------------------------------------------------


class Redis:
    """A throwaway redis-server (no persistence) on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not installed")
        self.port = br.free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            with contextlib.suppress(subprocess.CalledProcessError):
                subprocess.run(["redis-cli", "-p", str(self.port), "ping"], check=True,
                               capture_output=True)  # fmt: skip
                return
            time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "flushall"], check=True,
                       capture_output=True)  # fmt: skip

    def stop(self) -> None:
        br._stop(self.proc)  # type: ignore[arg-type]


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def pg_backends_cpu_s(dbname: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving `dbname` (by its process title)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            title = Path(f"/proc/{entry}/cmdline").read_bytes()
            if title.startswith(b"postgres: ") and f" {dbname} ".encode() in title:
                out[int(entry)] = br.proc_cpu_s(int(entry))
        except OSError:
            continue
    return out


# -- one configuration ------------------------------------------------------------------------


def run_config(cfg: Config, workers: int, seed: int, tmp: Path, redis: Redis) -> dict[str, Any]:
    from server.store.migrate import upgrade

    dbname = f"bench_scale_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg(f'CREATE DATABASE "{dbname}"'))
    db_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{dbname}"
    servers: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    procs: list[Any] = []
    logs = []
    result: dict[str, Any] = {"config": cfg.label, "runners": cfg.runners, **cfg.__dict__}
    try:
        upgrade(db_url)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RETRORUN_")},
            "RETRORUN_DATABASE_URL": db_url,
            "RETRORUN_ROOM_TICK_HZ": "4",
            "RETRORUN_RATE_LIMITS_ENABLED": "false",
            "RETRORUN_SECRET_KEY": br.SECRET,
            "RETRORUN_LOG_JSON": "false",
        }
        if cfg.backplane == "redis":
            redis.flush()
            env["RETRORUN_REDIS_URL"] = redis.url
        for i in range(cfg.processes):
            port = br.free_port()
            log = open(tmp / f"{cfg.backplane}-{cfg.processes}-{i}.log", "wb")  # noqa: SIM115
            logs.append(log)
            cmd = [*br.SERVER_CMD, "--host", "127.0.0.1", "--port", str(port)]
            servers.append(
                subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            )
            ports.append(port)
        for port, server in zip(ports, servers, strict=True):
            br._wait_port(port, server, 60.0)
        race_id, clients = asyncio.run(br._retrorun_setup(db_url, ports[0], cfg.runners))
        time.sleep(1.0)
        urls = [f"ws://127.0.0.1:{p}/ws/rooms/{race_id}" for p in ports]
        seconds_needed = br.COUNTDOWN_S + cfg.warmup + cfg.seconds + cfg.drain + 30.0
        ctx = mp.get_context("spawn")
        parts: list[list[tuple[str, str, int]]] = [[] for _ in range(workers)]
        parts[0].append(clients[0])  # the moderator: worker 0, process 0 (claims the room)
        for i, c in enumerate(clients[1:]):
            parts[i % workers].append(c)
        pipes = []
        for w in range(workers):
            parent, child = ctx.Pipe()
            spec = {
                "url": urls[w % cfg.processes],
                "clients": parts[w],
                "seed": seed,
                "seconds_needed": seconds_needed,
            }
            p = ctx.Process(target=br.worker_entry, args=(child, spec), daemon=True)
            p.start()
            procs.append(p)
            pipes.append(parent)
            if w == 0:  # the moderator's process takes the room before the rest join
                time.sleep(0.5)
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
        pipes[0].send(("start",))
        if not pipes[0].poll(20.0):
            raise RuntimeError("no countdown")
        msg = pipes[0].recv()
        if msg[0] != "gun" or msg[1] <= 0:
            raise RuntimeError(f"the race did not start: {msg}")
        gun = msg[1]
        measure_start = gun + cfg.warmup
        measure_end = measure_start + cfg.seconds
        go = {
            "gun": gun,
            "measure_start": measure_start,
            "measure_end": measure_end,
            "stop": measure_end + cfg.drain,
        }
        for pipe in pipes:
            pipe.send(("go", go))
        time.sleep(max(0.0, measure_start - time.time()))
        pids = [s.pid for s in servers]
        cpu0 = [br.proc_cpu_s(pid) for pid in pids]
        redis0 = br.proc_cpu_s(redis.proc.pid)
        pg0 = pg_backends_cpu_s(dbname)
        busy0, t0 = br.machine_busy(), time.monotonic()
        time.sleep(max(0.0, measure_end - time.time()))
        cpu1 = [br.proc_cpu_s(pid) for pid in pids]
        redis1 = br.proc_cpu_s(redis.proc.pid)
        pg1 = pg_backends_cpu_s(dbname)
        busy1, wall = br.machine_busy(), time.monotonic() - t0
        load = br.loadavg()
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
        gen_cpu = [r["cpu_s"] / cfg.seconds for r in results]
        loop_lags = sorted(x for r in results for x in r["loop_lags"])
        stats = [r["stats"] for r in results]
        closes: dict[str, int] = {}
        errors: dict[str, int] = {}
        for s in stats:
            for k, v in s["closes"].items():
                closes[k] = closes.get(k, 0) + v
            for k, v in s["errors"].items():
                errors[k] = errors.get(k, 0) + v
        per_proc = [100.0 * (b - a) / wall for a, b in zip(cpu0, cpu1, strict=True)]
        result.update(
            {
                "fixes": total,
                "lost": lost,
                "p50": br.pct(lat, 50, total),
                "p90": br.pct(lat, 90, total),
                "p99": br.pct(lat, 99, total),
                "max": lat[-1] if lat else float("nan"),
                "server_cpu": sum(per_proc),
                "per_proc": per_proc,
                "redis_cpu": 100.0 * (redis1 - redis0) / wall if cfg.backplane == "redis" else 0.0,
                "pg_cpu": 100.0 * sum(pg1[p] - pg0[p] for p in pg1 if p in pg0) / wall,
                "machine_busy": 100.0 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
                "gen_cpu_total": 100.0 * sum(gen_cpu),
                "gen_cpu_max": 100.0 * max(gen_cpu),
                "loop_lag_p99": br.pct(loop_lags, 99),
                "acks": sum(s["acks"] for s in stats),
                "closes": closes,
                "errors": errors,
                "connect_failed": sum(s["connect_failed"] for s in stats),
                "load": load,
            }
        )
        result["gen_ok"] = (
            result["gen_cpu_max"] < 100.0 * br.GEN_CPU_LIMIT
            and result["loop_lag_p99"] <= br.GEN_LOOP_LAG_P99_MS
        )
        return result
    finally:
        for p in procs:
            p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join(2.0)
        for server in servers:
            br._stop(server)
        for log in logs:
            log.close()
        # an owner whose loop stalled past its lease's self-fence drops the room (clients: 1012)
        result["lease_losses"] = sum(
            Path(log.name).read_text(errors="replace").count("lease lost; closing it here")
            for log in logs
        )
        with contextlib.suppress(Exception):
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))


def print_result(r: dict[str, Any]) -> None:
    if "error" in r:
        print(f"  {r['config']} N={r['runners']}: FAILED {r['error']}", flush=True)
        return
    f = br.fmt_ms
    print(
        f"  {r['config']:<10} N={r['runners']:<5} p50={f(r['p50'])} p90={f(r['p90'])}"
        f" p99={f(r['p99'])} max={f(r['max'])} ms lost={r['lost']}/{r['fixes']}"
        f" servers cpu={r['server_cpu']:.0f}% {[round(x) for x in r['per_proc']]}"
        f" redis={r['redis_cpu']:.0f}% pg={r['pg_cpu']:.0f}% machine={r['machine_busy']:.0f}%"
        f" gen cpu={r['gen_cpu_total']:.0f}% (max {r['gen_cpu_max']:.0f}%)"
        f" loop lag p99={r['loop_lag_p99']:.1f} ms gen_ok={r['gen_ok']} closes={r['closes']}"
        f" errors={r['errors']} lease losses={r.get('lease_losses', 0)} load {r['load']}",
        flush=True,
    )


INTRO = (
    "`bench/bench_scale.py` (N=200; `--full`: N=1000) — one live race, N runners at 1 Hz and N "
    "spectators, the runners (and spectators) spread evenly over P `retrorun serve` processes on "
    "PostgreSQL (the shared local server, a fresh database per configuration) and Redis (a "
    "throwaway `redis-server`, emptied per configuration), against one process with the "
    "in-process backplane on the same PostgreSQL. Standings at 4 Hz; the load generator is "
    "bench_rooms.py's (worker w on process w mod P). Latency: gps sent → the first standings "
    "frame that reflects it (`you.echo`); a fix not reflected by the end of the window is lost "
    "(a percentile that lands on lost fixes prints `> end`). CPU in % of one core over the "
    "window: every server process summed (per process in brackets), Redis, and the PostgreSQL "
    "backends of the bench database. Each N has its own subsection, replaced by the next run "
    "with that N."
)


def render(res: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    f = br.fmt_ms
    lines = [
        f"### N={meta['runners']}",
        "",
        f"`bench/bench_scale.py{' --full' if meta['full'] else ''}`: {meta['seconds']:g} s "
        f"measured after a {meta['warmup']:g} s warm-up, {meta['workers']} generator workers.",
        "",
        f"Machine: {meta['cpu']}, {meta['cores']} cores, Linux {meta['kernel']}; "
        f"{meta['versions']}. Load average before: {meta['load_before']}, "
        f"after: {meta['load_after']}. {meta['date']}. The machine is shared with other "
        "engineers' work: the load average is part of the figures.",
        "",
        "| config | p50 ms | p90 ms | p99 ms | max ms | lost | servers CPU % | Redis % | "
        "PG % | machine busy % | generator CPU % (max worker) | closes | rooms dropped by a "
        "lapsed lease | load avg (end) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res:
        if "error" in r:
            lines.append(f"| {r['config']} | failed: {r['error'][:120]} |" + " |" * 12)
            continue
        per = " + ".join(f"{x:.0f}" for x in r["per_proc"])
        gen = f"{r['gen_cpu_total']:.0f} ({r['gen_cpu_max']:.0f})"
        if not r["gen_ok"]:
            gen += " **generator saturated**"
        lines.append(
            f"| {r['config']} | {f(r['p50'])} | {f(r['p90'])} | {f(r['p99'])} | {f(r['max'])} "
            f"| {r['lost']}/{r['fixes']} | {r['server_cpu']:.0f} ({per}) | {r['redis_cpu']:.0f} "
            f"| {r['pg_cpu']:.0f} | {r['machine_busy']:.0f} | {gen} | "
            f"{r['closes'] or '-'} | {r.get('lease_losses', 0)} | {r['load']} |"
        )
    lines += ["", *meta.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


def write_section(sub: str, n: int) -> None:
    """Replace only our section of docs/benchmarks.md (others own the other sections), and in
    it only the subsection of this N (the other N's stays, and so does `### Findings`)."""
    text_now = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(text_now)
    subs: dict[int, str] = {}
    if found:
        for m in re.finditer(r"^### N=(\d+)[ \t]*\n.*?(?=^### |\Z)", found.group(0), re.S | re.M):
            subs[int(m.group(1))] = m.group(0).rstrip("\n")
    subs[n] = sub.rstrip("\n")
    kept = []  # the hand-written findings stay, last (each names the runs it reads)
    if found:
        notes = re.search(r"^### Findings[ \t]*\n.*?(?=^### |\Z)", found.group(0), re.S | re.M)
        if notes:
            kept.append(notes.group(0).rstrip("\n"))
    section = "\n\n".join([HEADING, INTRO, *(subs[k] for k in sorted(subs)), *kept])
    block = section.rstrip("\n") + "\n\n"
    if found:
        new = pattern.sub(lambda _m: block, text_now, count=1)
    else:
        new = text_now.rstrip("\n") + "\n\n" + block
    tmp = DOCS.with_suffix(".md.tmp-scale")
    tmp.write_text(new.rstrip("\n") + "\n")
    os.replace(tmp, DOCS)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--full", action="store_true", help="N=1000")
    parser.add_argument("--runners", type=int, default=None, help="N (default 200, --full 1000)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--configs", default="memory1,redis1,redis2,redis3")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--log-dir", default=None, help="keep the server logs here")
    args = parser.parse_args()
    n = args.runners or (1000 if args.full else 200)
    configs = []
    for name in args.configs.split(","):
        m = re.fullmatch(r"(memory|redis)(\d)", name.strip())
        if not m:
            raise SystemExit(f"unknown config {name!r}")
        configs.append(Config(m[1], int(m[2]), n, args.seconds, args.warmup))
    load_before = br.loadavg()
    res = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as d:
        tmp = Path(args.log_dir or d)
        tmp.mkdir(parents=True, exist_ok=True)
        redis = Redis(tmp)
        try:
            for cfg in configs:
                print(f"{cfg.label} N={n} ...", flush=True)
                try:
                    r = run_config(cfg, args.workers, args.seed, tmp, redis)
                except Exception as exc:
                    r = {"config": cfg.label, "runners": n, "error": str(exc)[:600]}
                print_result(r)
                res.append(r)
        finally:
            redis.stop()
    meta = {
        "full": args.full,
        "runners": n,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "workers": args.workers,
        "cpu": br.cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": br.versions(),
        "load_before": load_before,
        "load_after": br.loadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    section = render(res, meta)
    print(section)
    if not args.no_write:
        write_section(section, n)


if __name__ == "__main__":
    main()
