"""Leaderboard benchmark: Redis and SQL backends and an in-process SortedList peer, side by side.

One process, one board of N entries (integer-metre distances, so many scores tie), loaded into:

  redis        RedisLeaderboards on 127.0.0.1:6379 db 14, a unique key prefix, cleared at the end
  sql-sqlite   SqlLeaderboards on a SQLite file in a temp dir
  sql-postgres SqlLeaderboards on 127.0.0.1:5432 in a throwaway database, dropped at the end
  sortedlist   sortedcontainers.SortedList + dict in this process (the peer: no I/O at all)

Then, one client at a time: top-100 latency, rank latency at ranks 10, N/1000, N/10, 9N/10 and
for random runners, around (radius 5) latency. Then a bounded, open-loop mixed load (updates,
rank reads and top-100 reads at fixed rates through a bounded queue and 16 workers; latency is
counted from each operation's scheduled time, so a backlog shows up, and operations that find the
queue full are dropped and counted). Every loop is bounded in count and time.

The table is printed and written into docs/benchmarks.md under `## Leaderboards` (only that
section is replaced).

    .venv/bin/python bench/bench_boards.py                 # quick: 100,000 entries
    .venv/bin/python bench/bench_boards.py --entries 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.metadata as md
import math
import os
import platform
import random
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from sortedcontainers import SortedList  # noqa: E402
from sqlalchemy import text  # noqa: E402

from game.ranking import Direction, Entry, sort_key  # noqa: E402
from server.boards.base import BoardEntry, Leaderboards  # noqa: E402
from server.boards.redis import RedisLeaderboards, decode_member  # noqa: E402
from server.boards.sql import SqlLeaderboards  # noqa: E402
from server.store.db import create_engine  # noqa: E402
from server.store.migrate import upgrade  # noqa: E402

PG_ADMIN_URL = os.environ.get("RETRORUN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("RETRORUN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Leaderboards"
BOARD = "weekly:2026-W48"
HIGHER = Direction.HIGHER
LOAD_BATCH = 10_000
WORKERS = 16
QUEUE_MAX = 2_000


class SortedListBoards:
    """The peer: one board in a SortedList of sort keys plus a dict runner -> key. No I/O."""

    def __init__(self) -> None:
        self.keys: SortedList = SortedList()
        self.by_runner: dict[str, tuple[float, int, str]] = {}
        self.scores: dict[str, float] = {}

    async def submit(
        self, board: str, runner_id: str, score: float, reached_at: int, *, direction: Direction
    ) -> None:
        old = self.by_runner.get(runner_id)
        if old is not None:
            self.keys.remove(old)
        key = sort_key(score, reached_at, runner_id, direction)
        self.keys.add(key)
        self.by_runner[runner_id] = key
        self.scores[runner_id] = score

    async def submit_many(
        self, board: str, entries: Iterable[Entry], *, direction: Direction
    ) -> None:
        for e in entries:
            await self.submit(board, e.runner_id, e.score, e.reached_at, direction=direction)

    def _entry(self, rank: int, key: tuple[float, int, str]) -> BoardEntry:
        return BoardEntry(rank, key[2], self.scores[key[2]], key[1])

    async def top(self, board: str, limit: int = 100, offset: int = 0) -> list[BoardEntry]:
        keys = self.keys[offset : offset + limit]
        return [self._entry(offset + i, k) for i, k in enumerate(keys, start=1)]

    async def rank(self, board: str, runner_id: str) -> BoardEntry | None:
        key = self.by_runner.get(runner_id)
        return None if key is None else self._entry(self.keys.index(key) + 1, key)

    async def around(self, board: str, runner_id: str, radius: int = 5) -> list[BoardEntry]:
        key = self.by_runner.get(runner_id)
        if key is None:
            return []
        i = self.keys.index(key)
        first = max(0, i - radius)
        keys = self.keys[first : i + radius + 1]
        return [self._entry(first + j, k) for j, k in enumerate(keys, start=1)]

    async def count(self, board: str) -> int:
        return len(self.keys)

    async def remove(self, board: str, runner_id: str) -> None:
        key = self.by_runner.pop(runner_id, None)
        if key is not None:
            self.keys.remove(key)
            del self.scores[runner_id]

    async def clear(self, board: str) -> None:
        self.keys.clear()
        self.by_runner.clear()
        self.scores.clear()

    async def clear_all(self) -> None:
        await self.clear(BOARD)


# -- measurement ---------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Latency:
    samples_ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return pct(self.samples_ms, 0.50)

    @property
    def p99(self) -> float:
        return pct(self.samples_ms, 0.99)


async def timed(
    op: Callable[[int], Awaitable[Any]], samples: int, budget_s: float, min_samples: int = 20
) -> Latency:
    """Run `op(i)` one at a time: up to `samples` times or `budget_s`, at least `min_samples`."""
    out = Latency()
    for i in range(10):  # warm the pool, the plan cache and the script cache
        await op(i)
    deadline = time.perf_counter() + budget_s
    for i in range(samples):
        t0 = time.perf_counter()
        await op(i)
        out.samples_ms.append((time.perf_counter() - t0) * 1000)
        if i + 1 >= min_samples and time.perf_counter() > deadline:
            break
    return out


@dataclass
class Mixed:
    rates: dict[str, float]
    seconds: float
    done: dict[str, Latency] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


async def mixed_load(
    boards: Leaderboards,
    runners: list[str],
    rates: dict[str, float],
    seconds: float,
    rng: random.Random,
    first_position: int,
) -> Mixed:
    """Open-loop load at fixed rates through a bounded queue; bounded in time."""
    result = Mixed(rates, seconds, {k: Latency() for k in rates}, dict.fromkeys(rates, 0))
    queue: asyncio.Queue[tuple[str, float, int] | None] = asyncio.Queue(QUEUE_MAX)
    position = first_position

    async def run(kind: str, i: int) -> None:
        if kind == "update":
            runner = runners[i % len(runners)]
            await boards.submit(BOARD, runner, float(rng.randint(0, 100_000)), i, direction=HIGHER)
        elif kind == "rank":
            await boards.rank(BOARD, runners[rng.randrange(len(runners))])
        else:
            await boards.top(BOARD, 100)

    async def worker() -> None:
        while (job := await queue.get()) is not None:
            kind, due, i = job
            await run(kind, i)
            result.done[kind].samples_ms.append((time.perf_counter() - due) * 1000)

    tasks = [asyncio.create_task(worker()) for _ in range(WORKERS)]
    start = time.perf_counter()
    issued = dict.fromkeys(rates, 0)
    while (now := time.perf_counter()) - start < seconds:
        for kind, rate in rates.items():
            due_count = int((now - start) * rate) + 1  # op k is due at start + k/rate
            while issued[kind] < due_count:
                due = start + issued[kind] / rate
                issued[kind] += 1
                position += 1
                try:
                    queue.put_nowait((kind, due, position))
                except asyncio.QueueFull:
                    result.dropped[kind] += 1
        await asyncio.sleep(0.001)
    # Stop: drop what is still queued (it would only measure the backlog), finish in-flight ops.
    while not queue.empty():
        job = queue.get_nowait()
        if job is not None:
            result.dropped[job[0]] += 1
    for _ in tasks:
        await queue.put(None)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    result.elapsed_s = time.perf_counter() - start
    return result


@dataclass
class Report:
    name: str
    load_s: float = 0.0
    top: Latency | None = None
    #: Redis only, sampled in turn with `top`: the read this backend used before (ZRANGE, one
    #: bulk reply per member, decoded one by one), and a page read whose version is unchanged.
    top_zrange: Latency | None = None
    page_unchanged: Latency | None = None
    ranks: dict[str, Latency] = field(default_factory=dict)
    around: Latency | None = None
    mixed: Mixed | None = None


async def measure(
    name: str,
    boards: Leaderboards,
    entries: list[Entry],
    ordered: list[str],
    args: argparse.Namespace,
    after_load: Callable[[], Awaitable[None]] | None = None,
) -> Report:
    rep = Report(name)
    rng = random.Random(11)
    print(f"[{name}] loading {len(entries):,} entries ...", flush=True)
    t0 = time.perf_counter()
    for start in range(0, len(entries), LOAD_BATCH):
        await boards.submit_many(BOARD, entries[start : start + LOAD_BATCH], direction=HIGHER)
    if after_load is not None:
        await after_load()
    rep.load_s = time.perf_counter() - t0
    assert await boards.count(BOARD) == len(entries)
    top = await boards.top(BOARD, 100)
    assert [e.runner_id for e in top] == ordered[:100], f"{name}: top-100 disagrees"
    n = len(entries)
    print(f"[{name}] loaded in {rep.load_s:.1f}s; measuring reads ...", flush=True)

    if isinstance(boards, RedisLeaderboards):
        rep.top, rep.top_zrange, rep.page_unchanged = await _redis_reads(boards, args)
    else:
        rep.top = await timed(lambda i: boards.top(BOARD, 100), args.samples, args.budget)
    for label, rank in rank_targets(n):
        runner = ordered[rank - 1]
        got = await boards.rank(BOARD, runner)
        assert got is not None and got.rank == rank, f"{name}: rank {rank} came back as {got}"
        rep.ranks[label] = await timed(
            functools.partial(_rank_of, boards, runner), args.samples, args.budget
        )
    picks = [ordered[rng.randrange(n)] for _ in range(args.samples)]
    rep.ranks["random"] = await timed(
        lambda i: boards.rank(BOARD, picks[i]), args.samples, args.budget
    )
    rep.around = await timed(
        lambda i: boards.around(BOARD, picks[i], radius=5), args.samples, args.budget
    )
    if args.mixed_seconds > 0:
        print(f"[{name}] mixed load for {args.mixed_seconds:.0f}s ...", flush=True)
        rates = {"update": args.update_rate, "rank": args.rank_rate, "top": args.top_rate}
        rep.mixed = await mixed_load(
            boards, ordered, rates, args.mixed_seconds, rng, first_position=10 * n
        )
    return rep


async def _redis_reads(
    boards: RedisLeaderboards, args: argparse.Namespace
) -> tuple[Latency, Latency, Latency]:
    """top-100, the previous ZRANGE read and an unchanged-page check, one after the other in
    each round (in turn first), so the three see the same load on a shared machine."""
    zset = f"{boards.prefix}:{{{BOARD}}}:z"

    async def zrange_top() -> list[BoardEntry]:
        members: Any = await boards.redis.zrange(zset, 0, 99)
        return [decode_member(i, m) for i, m in enumerate(members, start=1)]

    page = await boards.page(BOARD, 100)
    assert page is not None and page.version is not None
    assert await zrange_top() == page.entries
    version = page.version
    ops: list[Callable[[], Awaitable[Any]]] = [
        lambda: boards.top(BOARD, 100),
        zrange_top,
        lambda: boards.page(BOARD, 100, unless=version),
    ]
    out = [Latency(), Latency(), Latency()]
    for op in ops * 10:  # warm up
        await op()
    deadline = time.perf_counter() + 3 * args.budget
    for i in range(args.samples):
        for k in range(3):
            j = (i + k) % 3
            t0 = time.perf_counter()
            await ops[j]()
            out[j].samples_ms.append((time.perf_counter() - t0) * 1000)
        if i + 1 >= 20 and time.perf_counter() > deadline:
            break
    return out[0], out[1], out[2]


async def _rank_of(boards: Leaderboards, runner: str, _i: int) -> BoardEntry | None:
    return await boards.rank(BOARD, runner)


def _rank_row(label: str, report: Report) -> Latency | None:
    return report.ranks.get(label)


def rank_targets(n: int) -> list[tuple[str, int]]:
    """Ranks 10 and 1,000, then a tenth and nine tenths down (100k and 900k of a million)."""
    ranks = sorted({r for r in (10, 1000, n // 10, 9 * n // 10) if 1 <= r <= n})
    return [(f"rank {r:,}", r) for r in ranks]


# -- backends --------------------------------------------------------------------------------


def make_entries(n: int) -> tuple[list[Entry], list[str]]:
    rng = random.Random(2026)
    positions = list(range(1, n + 1))
    rng.shuffle(positions)
    entries = [
        Entry(f"{rng.getrandbits(128):032x}", float(rng.randint(0, 100_000)), positions[i])
        for i in range(n)
    ]
    ordered = sorted(entries, key=lambda e: sort_key(e.score, e.reached_at, e.runner_id, HIGHER))
    return entries, [e.runner_id for e in ordered]


async def run_sql(
    name: str, url: str, entries: list[Entry], ordered: list[str], args: Any
) -> Report:
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    boards = SqlLeaderboards(engine)

    async def after_load() -> None:
        # Fresh statistics, and on PostgreSQL a visibility map so counts are index-only scans.
        async with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("VACUUM ANALYZE board_entries"))
            else:
                await conn.execute(text("ANALYZE"))
                await conn.commit()

    try:
        await boards.clear_all()
        return await measure(name, boards, entries, ordered, args, after_load)
    finally:
        await engine.dispose()


async def run_redis(entries: list[Entry], ordered: list[str], args: Any) -> Report:
    client = Redis.from_url(REDIS_URL)
    boards = RedisLeaderboards(client, prefix=f"bench:boards:{secrets.token_hex(6)}")
    try:
        return await measure("redis", boards, entries, ordered, args)
    finally:
        await boards.clear_all()
        await client.aclose()


async def pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace) -> list[Report]:
    print(f"generating {args.entries:,} entries ...", flush=True)
    entries, ordered = make_entries(args.entries)
    reports: list[Report] = []
    wanted = set(args.backends.split(","))
    if "redis" in wanted:
        reports.append(await run_redis(entries, ordered, args))
    if "sql-sqlite" in wanted:
        with tempfile.TemporaryDirectory(prefix="bench-boards-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'boards.db'}"
            reports.append(await run_sql("sql-sqlite", url, entries, ordered, args))
    if "sql-postgres" in wanted:
        name = f"retrorun_bench_boards_{secrets.token_hex(5)}"
        await pg_admin(f'CREATE DATABASE "{name}"')
        try:
            url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
            reports.append(await run_sql("sql-postgres", url, entries, ordered, args))
        finally:
            await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if "sortedlist" in wanted:
        reports.append(await measure("sortedlist", SortedListBoards(), entries, ordered, args))
    return reports


# -- report ----------------------------------------------------------------------------------

TARGETS = {
    ("top-100", "redis"): 1.0,
    ("rank", "redis"): 0.5,
    ("top-100", "sql-sqlite"): 5.0,
    ("top-100", "sql-postgres"): 5.0,
}


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def render(
    reports: list[Report], args: argparse.Namespace, load: tuple[float, float] = (0.0, 0.0)
) -> str:
    names = [r.name for r in reports]
    head = "| measure (ms) | " + " | ".join(names) + " |"
    sep = "|---|" + "---|" * len(names)
    rows = [head, sep]

    def row(label: str, pick: Callable[[Report], Latency | None]) -> None:
        for q in ("p50", "p99"):
            cells = []
            for r in reports:
                lat = pick(r)
                cells.append("" if lat is None else _ms(getattr(lat, q)))
            rows.append(f"| {label} {q} | " + " | ".join(cells) + " |")

    rows.append("| load (s) | " + " | ".join(f"{r.load_s:.1f}" for r in reports) + " |")
    row("top-100", lambda r: r.top)
    row("top-100 as before (ZRANGE)", lambda r: r.top_zrange)
    row("page check, unchanged", lambda r: r.page_unchanged)
    for label in reports[0].ranks:
        row(label, functools.partial(_rank_row, label))
    row("around r=5", lambda r: r.around)
    mixed = [r for r in reports if r.mixed is not None]
    lines = [
        HEADING,
        "",
        f"`.venv/bin/python bench/bench_boards.py --entries {args.entries}` — one board of "
        f"{args.entries:,} entries (integer-metre distances, so scores tie and the reached_at "
        "tie-break is exercised), one client, latency measured in the client around one await "
        f"(up to {args.samples} samples or {args.budget:.0f} s per row, at least 20). "
        f"Python {platform.python_version()}, redis-py {md.version('redis')}, "
        f"SQLAlchemy {md.version('sqlalchemy')}, "
        f"sortedcontainers {md.version('sortedcontainers')}; "
        f"PostgreSQL and Redis on 127.0.0.1, {os.cpu_count()} CPUs shared by client and servers "
        f"(and by other engineers' test runs: 1-minute load average {load[0]:.2f} at the start, "
        f"{load[1]:.2f} at the end; compare backends within this run, not across runs).",
        "",
        *rows,
        "",
        "`random` picks runners uniformly (the mean SQL rank is N/2). Load is `submit_many` in "
        f"batches of {LOAD_BATCH:,} (plus VACUUM ANALYZE on PostgreSQL). On Redis, `top-100` "
        "(one Lua call: the page as one bulk string, with the total and the board's version), "
        "`top-100 as before` (the ZRANGE read it replaced: one bulk reply per member) and "
        "`page check, unchanged` (the API's per-request check when its cached page is current: "
        "the version alone comes back) are sampled in turn, so they share the load.",
        "",
        "| target | result | met |",
        "|---|---|---|",
    ]
    for (what, backend), limit in TARGETS.items():
        rep = next((r for r in reports if r.name == backend), None)
        if rep is None:
            continue
        lats = [rep.top] if what == "top-100" else list(rep.ranks.values())
        worst = max(lat.p99 for lat in lats if lat is not None)
        shown = "top-100 p99" if what == "top-100" else "worst rank p99"
        lines.append(
            f"| {backend} {what} p99 ≤ {limit} ms | {shown} {_ms(worst)} ms | "
            f"{'yes' if worst <= limit else 'NO'} |"
        )
    if mixed:
        r0 = mixed[0].mixed
        assert r0 is not None
        rates = ", ".join(f"{int(v):,}/s {k}" for k, v in r0.rates.items())
        lines += [
            "",
            f"Mixed load, open loop for {r0.seconds:.0f} s: {rates}; {WORKERS} workers behind a "
            f"queue of {QUEUE_MAX:,}; latency from each operation's scheduled time (so queueing "
            "counts); operations that found the queue full, or were still queued at the end, "
            "are dropped.",
            "",
            "| backend | kind | done/s | dropped | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
        ]
        for r in mixed:
            m = r.mixed
            assert m is not None
            for kind in m.rates:
                lat = m.done[kind]
                n_done = len(lat.samples_ms)
                p50 = _ms(lat.p50) if n_done else "-"
                p99 = _ms(lat.p99) if n_done else "-"
                lines.append(
                    f"| {r.name} | {kind} | {n_done / m.elapsed_s:,.0f} | {m.dropped[kind]:,} | "
                    f"{p50} | {p99} |"
                )
    return "\n".join(lines) + "\n"


def write_section(section: str) -> None:
    """Replace only our section of docs/benchmarks.md (other tools own the other sections)."""
    text_now = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    block = section.rstrip("\n") + "\n\n"
    if pattern.search(text_now):
        new = pattern.sub(lambda _m: block, text_now, count=1)
    else:
        new = text_now.rstrip("\n") + "\n\n" + block
    tmp = DOCS.with_suffix(".md.tmp-boards")
    tmp.write_text(new.rstrip("\n") + "\n")
    os.replace(tmp, DOCS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=2_000)
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per latency row")
    parser.add_argument("--mixed-seconds", type=float, default=20.0)
    parser.add_argument("--update-rate", type=float, default=2_000)
    parser.add_argument("--rank-rate", type=float, default=2_000)
    parser.add_argument("--top-rate", type=float, default=200)
    parser.add_argument("--backends", default="redis,sql-sqlite,sql-postgres,sortedlist")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    reports = asyncio.run(main_async(args))
    section = render(reports, args, (load_before, os.getloadavg()[0]))
    print()
    print(section)
    if args.no_write or len(reports) < 4:
        print("(docs/benchmarks.md left alone: --no-write or not every backend ran)")
    else:
        write_section(section)
        print(f"(written to {DOCS.relative_to(ROOT)} under '{HEADING}')")


if __name__ == "__main__":
    main()
