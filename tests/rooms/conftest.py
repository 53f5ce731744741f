"""Room tests run against a real uvicorn server on a loopback port, with real websockets clients."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from sqlmodel.ext.asyncio.session import AsyncSession
from websockets.asyncio.client import ClientConnection, connect

from game import races
from game.course import Course
from game.track import Track
from server.app import create_app
from server.commands import execute
from server.config import Settings
from server.security import hash_password, issue_token
from server.store.db import create_engine
from server.store.event_store import EventStore
from server.store.tables import Runner
from server.tracks import stored_fix
from server.ws_protocol import LeanWebSocketProtocol

SECRET = "test-secret-key-long-enough-for-hs256-0123456789"
GOOD_ORIGIN = "http://good.example"
_HASH = hash_password("backwards!")


def room_settings(db: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{db}",
        secret_key=SECRET,
        log_json=False,
        room_tick_hz=4,
        allowed_origins=[GOOD_ORIGIN],
    )


@dataclass
class LiveServer:
    settings: Settings
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/rooms"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(settings: Settings, port: int | None = None, **options: Any) -> LiveServer:
    """A uvicorn server in a thread; `options` go to `uvicorn.Config` (e.g. `ws="wsproto"`; by
    default the WebSocket protocol `retrorun serve` runs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port or 0))
    options.setdefault("ws", LeanWebSocketProtocol)  # as `retrorun serve` runs
    config = uvicorn.Config(
        create_app(settings), log_config=None, lifespan="on", ws_max_size=64 * 1024, **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        thread.join(10)
        raise RuntimeError("the test server did not start")
    return LiveServer(settings, int(sock.getsockname()[1]), server, thread)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = start_server(room_settings(tmp_path_factory.mktemp("rooms") / "rooms.db"))
    try:
        yield srv
    finally:
        srv.stop()


# the world: accounts, tokens, races (made directly, as the API would)


@dataclass
class World:
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)

    async def users(self, count: int, role: str = "runner", *, banned: bool = False) -> list[str]:
        engine = create_engine(self.settings.database_url)
        ids = []
        try:
            async with AsyncSession(engine) as session:
                for _ in range(count):
                    rid = str(uuid.uuid4())
                    handle = f"u{rid[:12]}"
                    session.add(
                        Runner(
                            id=rid,
                            handle=handle,
                            handle_key=handle,
                            password_hash=_HASH,
                            role=role,
                            created_at=datetime.now(UTC),
                            banned=banned,
                        )
                    )
                    ids.append(rid)
                    self.tokens[rid] = issue_token(SECRET, rid, 0, 3600, datetime.now(UTC))[0]
                await session.commit()
        finally:
            await engine.dispose()
        return ids

    async def race(
        self,
        organiser: str,
        runners: list[str],
        distance_m: float,
        *,
        gun: float | None = None,
        course: Course | None = None,
        cutoff_s: float | None = None,
    ) -> str:
        """Schedule a race and register `runners`; with `gun`, the countdown fired before it."""
        race_id = str(uuid.uuid4())
        engine = create_engine(self.settings.database_url)
        store = EventStore(engine)
        stream = f"race-{race_id}"
        try:
            when = datetime.fromtimestamp(time.time() + 3600, UTC)
            await execute(
                store,
                stream,
                races,
                races.ScheduleRace(
                    race_id,
                    "Room test",
                    distance_m,
                    when,
                    100,
                    organiser,
                    course=course,
                    cutoff_s=cutoff_s,
                ),
            )
            for r in runners:
                await execute(store, stream, races, races.Register(r))
            if gun is not None:
                at = datetime.fromtimestamp(gun - 3.0, UTC)
                await execute(store, stream, races, races.StartCountdown(organiser, 3.0), now=at)
        finally:
            await engine.dispose()
        return race_id

    async def register(self, race_id: str, runner_id: str) -> None:
        """Register a runner as the API would (the room catches up with the stream)."""
        await self.command(race_id, races.Register(runner_id))

    async def command(self, race_id: str, command: Any) -> None:
        """A race command appended from outside the room, as the API does."""
        engine = create_engine(self.settings.database_url)
        try:
            await execute(EventStore(engine), f"race-{race_id}", races, command)
        finally:
            await engine.dispose()

    async def stream(self, race_id: str) -> list[Any]:
        engine = create_engine(self.settings.database_url)
        try:
            return await EventStore(engine).load(f"race-{race_id}")
        finally:
            await engine.dispose()


@pytest.fixture
def world(live: LiveServer) -> World:
    return World(live.settings)


# clients


async def join(
    srv: LiveServer, race_id: str, token: str, **kw: Any
) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(f"{srv.ws_url}/{race_id}", compression=None, **kw)
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def recv(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    frame: dict[str, Any] = orjson.loads(raw)
    return frame


async def until(ws: ClientConnection, pred: Any, timeout: float = 15.0) -> dict[str, Any]:
    """The first frame matching `pred` (bounded wait)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws, timeout)
            if pred(frame):
                return frame


def closed_by_server(http_url: str) -> dict[str, int]:
    """`retrorun_ws_closed_total` by close code, from the server's /metrics: the room sockets
    it closed for a reason."""
    text = httpx.get(f"{http_url}/metrics", timeout=10.0).text
    found = re.findall(r'^retrorun_ws_closed_total\{code="(\d+)"\} (\S+)$', text, re.M)
    return {code: int(float(n)) for code, n in found}


def shifted(track: Track, start: float) -> Track:
    return dataclasses.replace(track, t=track.t - track.t[0] + start)


def gps_frames(track: Track, upto: int | None = None) -> list[dict[str, Any]]:
    out = []
    n = len(track) if upto is None else min(len(track), upto)
    for i in range(n):
        f = track.fix(i)
        frame: dict[str, Any] = {"type": "gps", "seq": i + 1, "t": f.t, "lat": f.lat, "lon": f.lon}
        for name, key in (("acc_m", "acc"), ("speed_mps", "speed")):
            v = getattr(f, name)
            if v is not None:
                frame[key] = float(v)
        for name, key in (("course_deg", "course"), ("heading_deg", "heading")):
            v = getattr(f, name)
            if v is not None:
                frame[key] = float(v) % 360.0
        if f.cadence_spm is not None:
            frame["cadence"] = float(f.cadence_spm)
        if f.mock:
            frame["mock"] = True
        out.append(frame)
    return out


def expected_finishes(
    tracks: dict[str, Track], distance_m: float, gun: float
) -> dict[str, tuple[int, float]]:
    """Each track's own crossing: (index of the crossing fix, race time) by the pure engine,
    over the fixes as the room stores and checks them (`server.tracks.stored_fix`)."""
    out = {}
    now = time.time()
    for rid, track in tracks.items():
        live = races.RaceLive(distance_m, gun)
        for i, fix in enumerate(map(stored_fix, track.fixes())):
            outcome = live.add_fix(rid, fix, now)
            if outcome.finish is not None:
                out[rid] = (i, outcome.finish.time_s)
                break
    return out


async def send_paced(
    ws: ClientConnection, frames: list[dict[str, Any]], per_s: float = 18.0
) -> None:
    """Send under the per-connection rate limit (20 frames/s)."""
    for frame in frames:
        await ws.send(orjson.dumps(frame).decode())
        await asyncio.sleep(1.0 / per_s)
