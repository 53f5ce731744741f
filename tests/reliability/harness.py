"""Shared pieces of the fault tests: a `retrorun serve` subprocess, SDK runners that record
every ack, and the checker run after each fault (docs/reliability.md, "Fault injection")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, text

from clients.sdk import RoomClosed, RoomConnection
from game import races
from game.generate import Profile, generate
from game.track import Track
from server.commands import execute
from server.config import Settings
from server.store.db import create_engine
from server.store.event_store import EventStore
from server.store.read_models import RaceFixChunkRow
from server.tracks import decode_track
from tests.rooms.conftest import SECRET, World, expected_finishes, gps_frames, shifted

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# the server as a process


@dataclass
class ServerProcess:
    database_url: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: More `RETRORUN_*` settings for the process (they win over the harness's).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/rooms"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 30.0) -> float:
        """Start `retrorun serve`; returns the seconds until /healthz answered."""
        env = {
            **os.environ,
            "RETRORUN_DATABASE_URL": self.database_url,
            "RETRORUN_SECRET_KEY": SECRET,
            "RETRORUN_RATE_LIMITS_ENABLED": "false",
            "RETRORUN_ROOM_TICK_HZ": "4",
            "RETRORUN_LOG_JSON": "false",
            "RETRORUN_AUTO_MIGRATE": "true",
            **self.env,
        }
        env.pop("RETRORUN_REDIS_URL", None)
        log = self.log_path.open("ab")
        log.write(f"\n===== start #{self.starts + 1} =====\n".encode())
        log.flush()
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "retrorun"), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.starts += 1
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}: {self.log()[-2000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.http_url}/healthz", timeout=1.0).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not answer within {timeout_s} s: {self.log()[-2000:]}")

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 30.0) -> int | None:
        """Send `sig` to the process (by its pid) and wait for it to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fd_kinds(self) -> Counter[str]:
        """What the open descriptors are: `socket`, `anon_inode:[eventpoll]`, file paths..."""
        kinds: Counter[str] = Counter()
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{self.pid}/fd/{fd}")
                kinds[target.split(":[")[0] if target.startswith("socket") else target] += 1
        return kinds

    def tcp_states(self) -> Counter[str]:
        """States of the server port's TCP sockets (from /proc/net/tcp)."""
        names = {
            "01": "ESTABLISHED",
            "06": "TIME_WAIT",
            "08": "CLOSE_WAIT",
            "0A": "LISTEN",
            "04": "FIN_WAIT1",
            "05": "FIN_WAIT2",
            "09": "LAST_ACK",
            "07": "CLOSE",
        }
        states: Counter[str] = Counter()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == self.port:
                states[names.get(parts[3], parts[3])] += 1
        return states

    def gauge(self, name: str) -> float | None:
        """A Prometheus gauge's value from GET /metrics (None when absent)."""
        text = httpx.get(f"{self.http_url}/metrics", timeout=5.0).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None


def log_problems(log: str) -> list[str]:
    """Lines of a server log that report an error (tracebacks, ERROR/CRITICAL records)."""
    return [
        line
        for line in log.splitlines()
        if "Traceback" in line or " ERROR " in line or "CRITICAL" in line or "[ERROR]" in line
    ]


# a race in the past (every fix timestamped after the gun; sent as fast as the pacing allows)


@dataclass
class RaceSetup:
    world: World
    race_id: str
    organiser: str
    runners: list[str]
    tracks: dict[str, Track]
    expected: dict[str, tuple[int, float]]
    distance_m: float
    gun: float | None = None


async def make_race(
    database_url: str, n_runners: int = 2, distance_m: float = 200.0, seed: int = 100
) -> RaceSetup:
    world = World(Settings(database_url=database_url, secret_key=SECRET, log_json=False))
    runners = await world.users(n_runners)
    (organiser,) = await world.users(1, "moderator")
    probes = {r: _crossing_track(distance_m, seed + 2 * i) for i, r in enumerate(runners)}
    gun = round(time.time() - max(float(t.t[-1] - t.t[0]) for t in probes.values()) - 5.0, 3)
    tracks = {r: shifted(t, gun + 0.5) for r, t in probes.items()}
    expected = expected_finishes(tracks, distance_m, gun)
    assert set(expected) == set(runners), "every probe track must cross the line"
    race_id = await schedule_race(world, organiser, runners, distance_m, gun)
    return RaceSetup(world, race_id, organiser, runners, tracks, expected, distance_m, gun)


# how big a race the fault tests drive


@dataclass(frozen=True)
class Load:
    """The race a fault test drives: `runners` SDK clients sending `per_s` fixes a second each,
    standings at `tick_hz`, and how long the bounded waits may take at that size."""

    runners: int
    per_s: float
    tick_hz: int = 4
    distance_m: float = 150.0
    #: seconds of sending before the fault
    fault_after_s: float = 3.5
    #: bounded waits: every runner's first ack after the fault, all acked, final results
    recover_s: float = 20.0
    settle_s: float = 10.0
    results_s: float = 15.0

    @property
    def server_env(self) -> dict[str, str]:
        return {"RETRORUN_ROOM_TICK_HZ": str(self.tick_hz)}

    def __str__(self) -> str:
        return f"{self.runners}x{self.per_s:g}/s"


#: The CI size: two runners at 5-6 fixes a second (a 5 s outage queues under the room's burst).
SMALL = Load(2, 5.0)
#: Issue #10's size (on demand, `-m slow`): phone-rate fixes (1 Hz) from 500 runners, standings at
#: 1 Hz (the load generator shares the 2 CPUs with the server). `RETRORUN_FAULT_RUNNERS` changes
#: the count.
LARGE = Load(
    int(os.environ.get("RETRORUN_FAULT_RUNNERS", "500")),
    1.0,
    tick_hz=1,
    fault_after_s=15.0,
    recover_s=90.0,
    settle_s=90.0,
    results_s=60.0,
)


def loads(small: Load = SMALL) -> list[Any]:
    """`pytest.mark.parametrize` values: the CI size, and the 500-runner one marked `slow`."""
    import pytest

    return [
        pytest.param(small, id=f"{small.runners}-runners"),
        pytest.param(LARGE, id=f"{LARGE.runners}-runners", marks=pytest.mark.slow),
    ]


async def connect_all(recs: list[Recorder], at_once: int = 50) -> None:
    """Connect (and start recording) every client, `at_once` handshakes in flight at most."""
    gate = asyncio.Semaphore(at_once)

    async def one(rec: Recorder) -> None:
        async with gate:
            await rec.conn.connect()
            rec.start()

    await asyncio.gather(*(one(r) for r in recs))


def windows_p99(
    recs: list[Recorder], t_fault: float, t_calm: float
) -> tuple[float | None, float | None, float | None]:
    """p99 ack latency of the fixes sent before the fault (and acked before it), of those sent
    after `t_calm` (the recovery), and of the rest: the fixes the fault delayed."""
    lat = [(t - x, t, x) for r in recs for t, x in r.latency]  # (sent, acked, latency)
    before = [x for sent, t, x in lat if t < t_fault]
    after = [x for sent, t, x in lat if sent > t_calm]
    during = [x for sent, t, x in lat if t >= t_fault and sent <= t_calm]
    return _round(p99(before)), _round(p99(during)), _round(p99(after))


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def first_acks_after(recs: list[Recorder], t0: float) -> list[float]:
    """Seconds from `t0` to each client's first ack after it (those that had one)."""
    return [
        min(t for t, _ in r.latency if t > t0) - t0
        for r in recs
        if r.latency and r.latency[-1][0] > t0
    ]


async def schedule_race(
    world: World, organiser: str, runners: list[str], distance_m: float, gun: float
) -> str:
    """`World.race` with room for every runner (it schedules 100 places); the gun at `gun`."""
    race_id = str(uuid.uuid4())
    engine = create_engine(world.settings.database_url)
    store = EventStore(engine)
    stream = f"race-{race_id}"
    try:
        when = datetime.fromtimestamp(time.time() + 3600, UTC)
        cmd = races.ScheduleRace(
            race_id, "Fault test", distance_m, when, max(100, len(runners)), organiser
        )
        await execute(store, stream, races, cmd)
        for r in runners:
            await execute(store, stream, races, races.Register(r))
        at = datetime.fromtimestamp(gun - 3.0, UTC)
        await execute(store, stream, races, races.StartCountdown(organiser, 3.0), now=at)
    finally:
        store.close()
        await engine.dispose()
    return race_id


def _crossing_track(distance_m: float, seed: int) -> Track:
    """An honest track that crosses the line (a few seeds out of hundreds wander short)."""
    for attempt in range(20):
        track = generate(
            Profile.HONEST_RECREATIONAL, seed + 100_003 * attempt, 0.0, distance_m * 1.6
        )
        gun = time.time() - float(track.t[-1] - track.t[0]) - 5.0  # as make_race sets it
        if expected_finishes({"r": shifted(track, gun + 0.5)}, distance_m, gun):
            return track
    raise AssertionError(f"no crossing track for seed {seed}")


# SDK clients that record what they saw


@dataclass
class Recorder:
    """One SDK room connection and what it saw: acks (with latency), results, close code."""

    name: str
    conn: RoomConnection
    sent_at: dict[int, float] = field(default_factory=dict)
    acks: Counter[int] = field(default_factory=Counter)
    latency: list[tuple[float, float]] = field(default_factory=list)  # (ack time, latency)
    results: list[dict[str, Any]] | None = None
    welcomes: int = 0
    closed_code: int | None = None
    error: BaseException | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        try:
            async for frame in self.conn:
                kind = frame.get("type")
                if kind == "ack":
                    seq = frame["seq"]
                    self.acks[seq] += 1
                    if seq in self.sent_at and self.acks[seq] == 1:
                        now = time.monotonic()
                        self.latency.append((now, now - self.sent_at[seq]))
                elif kind == "welcome":
                    self.welcomes += 1
                    res = (frame.get("snapshot") or {}).get("results")
                    if res:
                        self.results = res
                elif kind == "event" and frame.get("event") == "closed":
                    self.results = frame["results"]
                elif kind == "error":
                    self.errors.append(frame)
        except RoomClosed as exc:
            self.closed_code = exc.code
        except BaseException as exc:
            self.error = exc

    async def send(self, fix: dict[str, Any]) -> int:
        body = {k: v for k, v in fix.items() if k not in ("type", "seq")}
        seq = await self.conn.send_gps(body)
        self.sent_at.setdefault(seq, time.monotonic())
        return seq

    @property
    def sent(self) -> int:
        return len(self.sent_at)

    @property
    def acked(self) -> set[int]:
        """Fixes the server acknowledged (the SDK forgets a fix on its ack)."""
        return {s for s in self.sent_at if s not in self.conn.unacked}

    async def wait_results(self, timeout_s: float) -> None:
        assert self._task is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)

    async def stop(self) -> None:
        await self.conn.close()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, 5)


def room_client(ws_url: str, race_id: str, token: str, name: str, **kw: Any) -> Recorder:
    opts: dict[str, Any] = {
        "deliver_acks": True,
        "sync_samples": 1,
        "max_reconnects": 40,
        "backoff_base_s": 0.1,
        "backoff_cap_s": 1.0,
        "open_timeout_s": 5.0,
        **kw,
    }
    return Recorder(name, RoomConnection(f"{ws_url}/{race_id}", token, **opts))


async def run_runner(rec: Recorder, track: Track, upto: int, per_s: float) -> None:
    """Send the track's fixes 1..upto at `per_s` (while disconnected the SDK queues them)."""
    for frame in gps_frames(track, upto):
        await rec.send(frame)
        await asyncio.sleep(1.0 / per_s)


async def wait_acked(recs: list[Recorder], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(not r.conn.unacked for r in recs):
            return True
        await asyncio.sleep(0.1)
    return False


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, round(0.99 * (len(v) - 1)))]


class CloseCodes(logging.Handler):
    """Close codes the SDK connections saw (from its "room connection lost" log record)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.codes: Counter[int] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if str(record.msg).startswith("room connection lost") and isinstance(args, tuple):
            self.codes[int(str(args[0]))] += 1

    def __enter__(self) -> CloseCodes:
        sdk_log = logging.getLogger("clients.sdk")
        self._level = sdk_log.level
        sdk_log.setLevel(logging.INFO)
        sdk_log.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        sdk_log = logging.getLogger("clients.sdk")
        sdk_log.removeHandler(self)
        sdk_log.setLevel(self._level)


# the checker


@dataclass
class Check:
    figures: dict[str, Any]
    problems: list[str]

    def __str__(self) -> str:
        return f"figures={self.figures} problems={self.problems}"


async def check(
    database_url: str,
    http_url: str,
    setup: RaceSetup,
    runners: dict[str, Recorder],
    watchers: list[Recorder],
    *,
    expect_finished: bool = True,
) -> Check:
    """Every acked fix stored exactly once, stream versions without gaps, every client's final
    results equal to GET /races/{id}/results (and to the pure engine's finish times)."""
    problems: list[str] = []
    figures: dict[str, Any] = {}
    engine = create_engine(database_url)
    chunks = RaceFixChunkRow.__table__  # type: ignore[attr-defined]
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(select(chunks).where(chunks.c.race_id == setup.race_id))
            ).all()
            versions = (
                await conn.execute(
                    text(
                        "SELECT stream_id, count(*), min(version), max(version), "
                        "count(DISTINCT version) FROM events GROUP BY stream_id"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    sent = acked = stored_total = dup_total = 0
    from_log: dict[str, float] = {}  # each runner's finish by the pure engine over the stored fixes
    live = None if setup.gun is None else races.RaceLive(setup.distance_m, setup.gun)
    for rid, rec in runners.items():
        stored: Counter[int] = Counter()
        for row in sorted((r for r in rows if r.runner_id == rid), key=lambda r: r.chunk):
            fixes = decode_track(row.data)
            n = len(fixes)
            for fix in fixes.fixes() if live is not None and rid not in from_log else ():
                outcome = live.add_fix(rid, fix, max(time.time(), fix.t))
                if outcome.finish is not None:
                    from_log[rid] = outcome.finish.time_s
                    break
            if n != row.last_seq - row.first_seq + 1:
                problems.append(
                    f"{rec.name}: chunk {row.chunk} holds {n} fixes for "
                    f"seq {row.first_seq}..{row.last_seq}"
                )
            stored.update(range(row.first_seq, row.last_seq + 1))
        dups = sorted(s for s, c in stored.items() if c > 1)
        missing = sorted(rec.acked - set(stored))
        top = max(stored, default=0)
        holes = sorted(set(range(1, top + 1)) - set(stored))
        acked_holes = [s for s in holes if s <= max(rec.acked, default=0)]
        if dups:
            problems.append(f"{rec.name}: seqs stored twice: {dups[:20]}")
        if missing:
            problems.append(f"{rec.name}: acked but not stored: {missing[:20]}")
        if acked_holes:
            problems.append(
                f"{rec.name}: stored seqs have gaps below the highest ack: {acked_holes[:20]}"
            )
        sent += rec.sent
        acked += len(rec.acked)
        stored_total += len(stored)
        dup_total += len(dups)
    figures.update(sent=sent, acked=acked, stored=stored_total, duplicates=dup_total)
    bad_streams = [tuple(v) for v in versions if not (v[2] == 1 and v[3] == v[1] and v[4] == v[1])]
    if bad_streams:
        problems.append(f"streams with version gaps or duplicates: {bad_streams[:10]}")
    figures["streams_checked"] = len(versions)
    async with httpx.AsyncClient(base_url=http_url, timeout=10) as http:
        answer = (await http.get(f"/api/v1/races/{setup.race_id}/results")).json()
    figures["race_status"] = answer.get("status")
    server_results = answer.get("results")
    if expect_finished:
        if answer.get("status") != "finished":
            problems.append(f"race status {answer.get('status')}, not finished")
        for rec in [*runners.values(), *watchers]:
            if rec.results is None:
                problems.append(
                    f"{rec.name}: never got the final results "
                    f"(closed={rec.closed_code}, error={rec.error!r})"
                )
            elif _norm(rec.results) != _norm(server_results):
                problems.append(f"{rec.name}: results differ: {rec.results} != {server_results}")
        by_runner = {r["runner_id"]: r for r in server_results or []}
        # results are a function of the log: the pure engine over the stored fixes agrees (and
        # over the fixes as sent, within the storage's rounding; figures only)
        drift, off_log = [], []
        for rid, (_, time_s) in setup.expected.items():
            got = by_runner.get(rid, {}).get("time_s")
            want = from_log.get(rid) if live is not None else time_s
            if got is not None and want is not None:
                off_log.append(abs(got - want))
            if got is None or want is None or abs(got - want) > 0.002:
                problems.append(
                    f"runner {rid[:8]}: time {got} != engine's {want} over the stored fixes "
                    f"({time_s:.3f} over the fixes as sent)"
                )
            if got is not None:
                drift.append(abs(got - time_s))
        figures["max_finish_drift_from_sent_fixes_s"] = round(max(drift, default=0.0), 3)
        figures["finishes_off_the_log"] = sum(1 for x in off_log if x > 0.002)
        figures["max_finish_diff_from_log_s"] = round(max(off_log, default=0.0), 3)
        figures["finishes_missing"] = sum(
            1 for rid in setup.expected if by_runner.get(rid, {}).get("time_s") is None
        )
    return Check(figures, problems)


def _norm(results: Any) -> Any:
    return sorted(
        (
            r.get("place"),
            r["runner_id"],
            None if r.get("time_s") is None else round(r["time_s"], 3),
            None if r.get("distance_m") is None else round(r["distance_m"], 2),
            r.get("status"),
        )
        for r in results or []
    )
