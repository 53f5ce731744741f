"""Simulate a live race against a running server: N runners (and K cheaters) streaming GPS.

    python -m clients.simulate race --base-url http://127.0.0.1:8000 --runners 8 --cheaters 1

What it does: signs up (or signs in) N accounts `sim_01`...; creates a race unless `--race` is
given (as the moderator, `mod` / `backwards!` on the demo); registers the runners; connects
everyone to the race room; the moderator starts the countdown with a `control {action: start}`
frame; each runner then streams `gps` frames from the synthetic track generator (honest backward
runners of mixed levels, cheaters in a car, on a bike, teleporting, with mock locations);
live standings are printed; when every runner is done the moderator closes the race and the
results are printed. Everything is bounded by `--max-seconds`.

Time model (real time, honest by construction). A track is generated from the gun on a 1 s
grid; fix i, recorded `dt_i` seconds after the first one, is sent when the *server* clock (from
ping/pong clock sync) reads `start_at + dt_i / speedup`, and carries exactly that server time as
`t`. So `t` never runs ahead of the server (no `future_timestamps` flag) and, at `--speedup 1`
(the default), the speeds the server computes are the runner's true speeds: honest runners are
verified. With `--speedup X > 1` the same ground is covered X times faster, so every speed is
multiplied by X: times become unrealistic and the live pace check may (rightly) flag honest
runners. Sending simulated timestamps faster than real time is not an option either: the server
refuses fixes from its future. Keep demos short with a short race instead (default 400 m, a few
minutes; a backward walker may need up to about seven).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from clients.sdk import ApiError, Frame, RetroRunClient, RoomClosed, RoomConnection, RoomError
from game.generate import Device, Level, Profile, generate, honest_track, runner_params
from game.track import Track

app = typer.Typer(help="Simulated runners against a RetroRun server.", no_args_is_help=True)
console = Console()

#: Exit codes
EXIT_NO_RACE_API = 3
EXIT_TIMEOUT = 4

HONEST_MIX = (Level.RECREATIONAL, Level.TRAINED, Level.RECREATIONAL, Level.WALKER)
CHEATER_MIX = (Profile.CAR, Profile.BIKE, Profile.MOCK_LOCATION, Profile.TELEPORT)
#: The generator's car runs 300 m before getting in; here it gets in after 10% of the race,
#: so the ride is long enough for the pace check to see it even in a short race.
CAR_RUNS_FIRST = 0.1
#: Close code of a room closed for good (the race is over).
ROOM_OVER = 4504
#: Registration retries on an optimistic-concurrency conflict (409 version_conflict).
REGISTER_TRIES = 8
#: A noisy GPS track measures a little less than the ground covered: generate some spare.
TRACK_MARGIN = 1.25
TRACK_SPARE_M = 50.0
DONE = frozenset({"finished", "review", "dq", "dnf", "rejected"})
OVER = frozenset({"finished", "aborted", "closed"})

_GPS_COLUMNS = (
    ("acc", "acc_m"),
    ("speed", "speed_mps"),
    ("course", "course_deg"),
    ("heading", "heading_deg"),
    ("cadence", "cadence_spm"),
)


def track_fixes(track: Track) -> list[dict[str, float | bool]]:
    """A track as protocol fixes (`t`, `lat`, `lon` and the optional fields it carries); also
    valid JSON `points` for `POST /api/v1/runs`."""
    out: list[dict[str, float | bool]] = []
    for i in range(len(track)):
        fix: dict[str, float | bool] = {
            "t": float(track.t[i]),
            "lat": float(track.lat[i]),
            "lon": float(track.lon[i]),
        }
        for key, attr in _GPS_COLUMNS:
            value = float(getattr(track, attr)[i])
            if not math.isnan(value):
                fix[key] = value
        if bool(track.mock[i]):
            fix["mock"] = True
        out.append(fix)
    return out


@dataclass
class SimRunner:
    """One simulated runner: who, how they move, and what the room said about them."""

    index: int
    handle: str
    kind: str  # a level for honest runners, a cheater profile otherwise
    cheater: bool
    fixes: list[dict[str, float | bool]] = field(default_factory=list)
    runner_id: str = ""
    api: RetroRunClient | None = None
    room: RoomConnection | None = None
    status: str = "registered"
    distance_m: float = 0.0
    sent: int = 0
    error: str | None = None


def plan(
    runners: int, cheaters: int, distance_m: float, seed: int, prefix: str = "sim"
) -> list[SimRunner]:
    """Who runs: `runners` accounts, the last `cheaters` of them cheating, each with a track of
    offsets from the gun (t starts at 0)."""
    rng = np.random.default_rng(seed)
    out = []
    length = distance_m * TRACK_MARGIN + TRACK_SPARE_M
    honest = runners - cheaters
    for i in range(runners):
        handle = f"{prefix}_{i + 1:02d}"
        if i < honest:
            level = HONEST_MIX[i % len(HONEST_MIX)]
            device = Device.PHONE if rng.random() < 0.8 else Device.WATCH
            params = runner_params(rng, level, distance_m=length, device=device)
            track = honest_track(params, rng, 0.0, length)
            out.append(SimRunner(i, handle, level.value, False, _offsets(track)))
        else:
            profile = CHEATER_MIX[(i - honest) % len(CHEATER_MIX)]
            fixes = _offsets(generate(profile, rng, 0.0, length))
            if profile is Profile.CAR:
                fixes = _skip_ahead(fixes, 300.0 - CAR_RUNS_FIRST * distance_m)
            out.append(SimRunner(i, handle, profile.value, True, fixes))
    return out


def path_m(fixes: list[dict[str, float | bool]]) -> npt.NDArray[np.float64]:
    """Cumulative great-circle distance along the fixes, metres (GPS noise included)."""
    lat = np.radians([float(f["lat"]) for f in fixes])
    lon = np.radians([float(f["lon"]) for f in fixes])
    a = (
        np.sin(np.diff(lat) / 2) ** 2
        + np.cos(lat[:-1]) * np.cos(lat[1:]) * np.sin(np.diff(lon) / 2) ** 2
    )
    steps = 2 * 6_371_008.8 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return np.concatenate([[0.0], np.cumsum(steps)])


def _skip_ahead(
    fixes: list[dict[str, float | bool]], metres: float
) -> list[dict[str, float | bool]]:
    """Drop the fixes of the first `metres` of a track and restart its clock at 0."""
    if metres <= 0 or len(fixes) < 2:
        return fixes
    start = min(int(np.searchsorted(path_m(fixes), metres)), len(fixes) - 2)
    t0 = float(fixes[start]["t"])
    return [{**f, "t": float(f["t"]) - t0} for f in fixes[start:]]


def _offsets(track: Track) -> list[dict[str, float | bool]]:
    fixes = track_fixes(track)
    t0 = float(fixes[0]["t"]) if fixes else 0.0
    for fix in fixes:
        fix["t"] = float(fix["t"]) - t0
    return fixes


# The race


@dataclass
class Options:
    base_url: str
    runners: int
    cheaters: int
    race_id: str | None
    speedup: float
    distance_m: float
    countdown_s: float
    moderator: tuple[str, str]
    password: str
    prefix: str
    seed: int
    max_seconds: float
    live: bool


class NoRaceApi(Exception):
    """The server has no race API (yet): nothing to simulate."""


class Simulation:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.runners = plan(opts.runners, opts.cheaters, opts.distance_m, opts.seed, opts.prefix)
        self.by_id: dict[str, SimRunner] = {}
        self.standings: Frame | None = None
        self.events: list[str] = []
        self.race: dict[str, Any] = {}
        self.start_at: float | None = None
        self.over = asyncio.Event()
        self.mod_api = RetroRunClient(opts.base_url)
        self.mod_room: RoomConnection | None = None

    async def run(self) -> int:
        deadline = time.monotonic() + self.opts.max_seconds
        try:
            async with asyncio.timeout(self.opts.max_seconds):
                await self._setup()
                await self._race()
            code = 0
        except TimeoutError:
            console.print(f"[yellow]stopped after --max-seconds {self.opts.max_seconds:g}[/yellow]")
            code = EXIT_TIMEOUT
        finally:
            await self._close_race(time.monotonic() > deadline)
            await self._report()
            await self._shutdown()
        return code

    async def _setup(self) -> None:
        o = self.opts
        await self.mod_api.login(*o.moderator)
        if o.race_id is None:
            when = datetime.now(UTC) + timedelta(minutes=1)
            title = f"Simulated reverse {o.distance_m:g} m {datetime.now(UTC):%H:%M}"
            try:
                self.race = await self.mod_api.create_race(
                    title, o.distance_m, when, capacity=max(o.runners, 1), open=True
                )
            except ApiError as exc:
                if exc.status in (404, 405):  # a created race cannot be missing: no such route
                    raise NoRaceApi(f"POST /api/v1/races answered {exc.status}") from exc
                raise
            console.print(f"created race [bold]{self.race['id']}[/bold] ({title})")
        else:
            self.race = await self.mod_api.race(o.race_id)
        race_id = str(self.race["id"])
        await asyncio.gather(*(self._sign_up(r, race_id) for r in self.runners))
        self.by_id = {r.runner_id: r for r in self.runners}
        self.mod_room = self.mod_api.room(race_id)
        await self.mod_room.connect()
        await asyncio.gather(*(self._connect(r, race_id) for r in self.runners))
        console.print(
            f"{len(self.runners)} runners in the room ({o.cheaters} cheating); "
            f"watch at {o.base_url}/ (race {race_id})"
        )

    async def _sign_up(self, r: SimRunner, race_id: str) -> None:
        api = r.api = RetroRunClient(self.opts.base_url)
        try:
            await api.register(r.handle, self.opts.password)
        except ApiError as exc:
            if exc.code != "handle_taken":
                raise
        await api.login(r.handle, self.opts.password)
        r.runner_id = (await api.me())["id"]
        for attempt in range(REGISTER_TRIES):  # concurrent sign-ups race on the race's stream
            try:
                await api.register_for_race(race_id)
                return
            except ApiError as exc:
                if exc.code == "already_registered":
                    return
                if exc.code != "version_conflict" or attempt == REGISTER_TRIES - 1:
                    raise
            await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))

    async def _connect(self, r: SimRunner, race_id: str) -> None:
        assert r.api is not None
        r.room = r.api.room(race_id, ping_interval_s=15.0)
        await r.room.connect()
        await r.room.ready()

    async def _race(self) -> None:
        room = self.mod_room
        assert room is not None
        self.start_at = _start_at(self.race) or _start_at(room.welcome or {})
        if self.start_at is None:
            frame = await room.control("start", countdown_s=self.opts.countdown_s, timeout_s=15.0)
            if frame is not None and frame.get("type") == "countdown":
                self.start_at = float(frame["start_at"])
            else:  # the countdown frame may still be on its way
                got = await room.wait_for(lambda f: f.get("type") == "countdown", 15.0)
                self.start_at = float(got["start_at"])
        console.print(f"the gun fires in {max(0.0, self.start_at - room.server_now()):.1f} s")
        watcher = asyncio.create_task(self._watch(room))
        try:
            await asyncio.gather(*(self._stream(r) for r in self.runners))
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _stream(self, r: SimRunner) -> None:
        """Send the runner's fixes on the server clock until they finish or the track ends."""
        room = r.room
        assert room is not None and self.start_at is not None
        reader = asyncio.create_task(self._follow(r, room))
        try:
            for fix in r.fixes:
                if self.over.is_set() or r.status in DONE:
                    break
                due = self.start_at + float(fix["t"]) / self.opts.speedup
                wait = due - room.server_now()
                if wait > 0:
                    await asyncio.sleep(wait)
                await room.send_gps({**fix, "t": round(due, 3)})
                r.sent += 1
            for _ in range(100):  # let the last acks arrive (bounded: 10 s)
                if not room.unacked or self.over.is_set():
                    break
                await asyncio.sleep(0.1)
            if r.status not in DONE:
                r.status = "out of track" if not self.over.is_set() else r.status
        except RoomClosed as exc:
            if exc.code != ROOM_OVER:
                r.error = str(exc)
        except RoomError as exc:
            r.error = str(exc)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, RoomError):
                await reader

    async def _follow(self, r: SimRunner, room: RoomConnection) -> None:
        async for frame in room:
            you = frame.get("you") if frame.get("type") == "standings" else None
            if isinstance(you, dict):
                r.status = str(you.get("status", r.status))
                r.distance_m = float(you.get("distance_m") or r.distance_m)
            elif frame.get("type") == "event" and frame.get("event") == "disqualified":
                if frame.get("runner_id") == r.runner_id:
                    r.status = "dq"
            elif frame.get("type") == "error":
                r.error = f"{frame.get('code')}: {frame.get('message')}"

    async def _watch(self, room: RoomConnection) -> None:
        """The moderator's view: standings and events, drawn live."""
        display = (
            Live(self._table(), console=console, refresh_per_second=2) if self.opts.live else None
        )
        with display or contextlib.nullcontext():
            try:
                await self._watch_frames(room, display)
            except RoomClosed as exc:
                if exc.code != ROOM_OVER:
                    raise
            self.over.set()

    async def _watch_frames(self, room: RoomConnection, display: Live | None) -> None:
        last_print = 0.0
        async for frame in room:
            kind = frame.get("type")
            if kind == "standings":
                self.standings = frame
                for row in frame.get("leaders", []):
                    sim = self.by_id.get(str(row.get("runner_id")))
                    if sim is not None:
                        sim.distance_m = float(row.get("distance_m") or 0.0)
                        sim.status = str(row.get("status", sim.status))
            elif kind == "event":
                self.events.append(self._describe(frame))
                if frame.get("event") in OVER:
                    self.over.set()
            if display is not None:
                display.update(self._table())
            elif time.monotonic() - last_print > 5.0 and kind == "standings":
                last_print = time.monotonic()
                console.print(self._line())

    def _name(self, runner_id: object) -> str:
        sim = self.by_id.get(str(runner_id))
        return sim.handle if sim else str(runner_id)[:8]

    def _describe(self, frame: Frame) -> str:
        what = str(frame.get("event"))
        who = frame.get("runner_id")
        extra = ""
        if what == "flag":
            flag = frame.get("flag") or frame
            extra = f" {flag.get('code', '')}" if isinstance(flag, dict) else ""
        return f"{what}{' ' + self._name(who) if who else ''}{extra}"

    def _line(self) -> str:
        rows = sorted(self.runners, key=lambda r: -r.distance_m)
        return "  ".join(f"{r.handle} {r.distance_m:.0f}m {r.status}" for r in rows[:10])

    def _table(self) -> Table:
        table = Table(title=f"race {self.race.get('id', '')} — live standings", expand=False)
        for col in ("rank", "runner", "kind", "distance", "time", "status", "fixes"):
            table.add_column(col)
        leaders = (self.standings or {}).get("leaders") or []
        listed: set[str] = set()
        for row in leaders:
            rid = str(row.get("runner_id"))
            listed.add(rid)
            sim = self.by_id.get(rid)
            table.add_row(
                str(row.get("rank", "")),
                self._name(rid),
                sim.kind if sim else "",
                f"{float(row.get('distance_m') or 0.0):.0f} m",
                _time(row.get("time_s")),
                str(row.get("status", "")),
                str(sim.sent) if sim else "",
            )
        for sim in self.runners:
            if sim.runner_id not in listed:
                table.add_row(
                    "",
                    sim.handle,
                    sim.kind,
                    f"{sim.distance_m:.0f} m",
                    "",
                    sim.status,
                    str(sim.sent),
                )
        if self.events:
            table.caption = "  ·  ".join(self.events[-4:])
        return table

    async def _close_race(self, timed_out: bool) -> None:
        room = self.mod_room
        if room is None or self.over.is_set() or self.start_at is None:
            return
        with contextlib.suppress(RoomError, TimeoutError, ApiError):
            await room.control("close", timeout_s=10.0)
        if timed_out:
            console.print("closed the race: runners still out are DNF")

    async def _report(self) -> None:
        race_id = self.race.get("id")
        if race_id is None or self.start_at is None:
            return  # no race, or it never started: nothing to report
        try:
            answer = await self.mod_api.race_results(str(race_id))
        except ApiError as exc:
            console.print(f"[red]no results: {exc}[/red]")
            return
        table = Table(title=f"results — race {race_id} ({answer.get('status', '?')})")
        for col in ("place", "runner", "kind", "time", "status"):
            table.add_column(col)
        for row in answer.get("results", []):
            sim = self.by_id.get(str(row.get("runner_id")))
            table.add_row(
                str(row.get("place") or "—"),
                self._name(row.get("runner_id")),
                (sim.kind + (" (cheater)" if sim.cheater else "")) if sim else "",
                _time(row.get("time_s")),
                str(row.get("status", "")),
            )
        console.print(table)
        errors = [f"{r.handle}: {r.error}" for r in self.runners if r.error]
        for line in errors:
            console.print(f"[yellow]{line}[/yellow]")

    async def _shutdown(self) -> None:
        rooms = [r.room for r in self.runners if r.room is not None]
        if self.mod_room is not None:
            rooms.append(self.mod_room)
        await asyncio.gather(*(room.close() for room in rooms), return_exceptions=True)
        apis = [r.api for r in self.runners if r.api is not None] + [self.mod_api]
        await asyncio.gather(*(api.aclose() for api in apis), return_exceptions=True)


def _start_at(doc: dict[str, Any]) -> float | None:
    """The gun time if a race (or a room snapshot) already has one."""
    for candidate in (doc, doc.get("snapshot"), (doc.get("snapshot") or {}).get("race")):
        value = candidate.get("start_at") if isinstance(candidate, dict) else None
        if isinstance(value, int | float):  # room frames: Unix seconds
            return float(value)
        if isinstance(value, str):  # REST: ISO 8601
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def _time(value: object) -> str:
    if not isinstance(value, int | float):
        return ""
    minutes, seconds = divmod(float(value), 60.0)
    return f"{int(minutes)}:{seconds:05.2f}"


def _credentials(value: str) -> tuple[str, str]:
    handle, sep, password = value.partition(":")
    if not sep or not handle or not password:
        raise typer.BadParameter("use HANDLE:PASSWORD")
    return handle, password


@app.callback()
def main() -> None:
    """Simulated runners against a RetroRun server."""


@app.command()
def race(
    base_url: Annotated[str, typer.Option(help="The server.")] = "http://127.0.0.1:8000",
    runners: Annotated[int, typer.Option(min=1, max=200, help="Simulated runners.")] = 8,
    race_id: Annotated[
        str | None, typer.Option("--race", help="Use this race; else one is created.")
    ] = None,
    cheaters: Annotated[
        int, typer.Option(min=0, help="How many of the runners cheat (car, bike, ...).")
    ] = 1,
    speedup: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=20.0,
            help="Replay tracks faster than real time. >1 multiplies every speed: "
            "times become unrealistic and the pace check may flag honest runners.",
        ),
    ] = 1.0,
    distance: Annotated[float, typer.Option(min=50, help="Race distance, metres.")] = 400.0,
    countdown: Annotated[float, typer.Option(min=3, max=600, help="Countdown, seconds.")] = 10.0,
    moderator: Annotated[
        str, typer.Option(help="HANDLE:PASSWORD of a moderator (starts and closes the race).")
    ] = "mod:backwards!",
    password: Annotated[str, typer.Option(help="Password of the simulated accounts.")] = (
        "backwards!"
    ),
    prefix: Annotated[str, typer.Option(help="Handle prefix of the simulated accounts.")] = "sim",
    seed: Annotated[int, typer.Option(help="Seed of the track generator.")] = 7,
    max_seconds: Annotated[float, typer.Option(min=5, help="Give up after this long.")] = 600.0,
    live: Annotated[bool, typer.Option(help="Redraw a live table (else print lines).")] = True,
) -> None:
    """Run a simulated race: sign runners up, start it, stream GPS, print standings and results."""
    if cheaters > runners:
        raise typer.BadParameter("--cheaters cannot exceed --runners")
    opts = Options(
        base_url=base_url.rstrip("/"),
        runners=runners,
        cheaters=cheaters,
        race_id=race_id,
        speedup=speedup,
        distance_m=distance,
        countdown_s=countdown,
        moderator=_credentials(moderator),
        password=password,
        prefix=prefix,
        seed=seed,
        max_seconds=max_seconds,
        live=live,
    )
    if speedup > 1:
        console.print(
            f"[yellow]--speedup {speedup:g}: every speed is x{speedup:g}, "
            "so times are unrealistic and honest runners may be flagged[/yellow]"
        )
    raise typer.Exit(asyncio.run(_main(opts)))


async def _main(opts: Options) -> int:
    sim = Simulation(opts)
    try:
        return await sim.run()
    except NoRaceApi as exc:
        console.print(f"[yellow]this server has no race API yet ({exc}): nothing to simulate")
        return EXIT_NO_RACE_API
    except ApiError as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    except RoomError as exc:
        console.print(f"[red]room: {exc}[/red]")
        return 1


if __name__ == "__main__":
    app()
