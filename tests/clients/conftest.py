"""A real server for the SDK: the app served by uvicorn on a loopback port, in a thread; and a
small loopback TCP proxy that can stall or cut the connections through it (network faults)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import select

from server.app import create_app
from server.config import Settings
from server.store.db import create_engine
from server.store.read_models import RaceFixChunkRow
from server.tracks import decode_track

SECRET = "test-secret-key-long-enough-for-hs256-0123456789"


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    settings: Settings


def sdk_settings(db: Path, **overrides: object) -> Settings:
    return Settings(
        database_url=f"sqlite:///{db}",
        secret_key=SECRET,
        log_json=False,
        **overrides,  # type: ignore[arg-type]
    )


@dataclass
class RunningServer:
    """A uvicorn server in a thread, on `port`; `stop()` shuts it down gracefully (rooms close
    their sockets with 1012), and a new one may then listen on the same port."""

    settings: Settings
    port: int
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def start_server(settings: Settings, port: int = 0) -> RunningServer:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        create_app(settings), log_config=None, lifespan="on", ws_max_size=64 * 1024
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):  # up to 30 s for migrations and the lifespan
        if server.started or not thread.is_alive():
            break
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        thread.join(10)
        sock.close()
        raise RuntimeError("the test server did not start")
    return RunningServer(settings, int(sock.getsockname()[1]), server, thread, sock)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    db: Path = tmp_path_factory.mktemp("sdk") / "sdk.db"
    srv = start_server(sdk_settings(db))
    try:
        yield LiveServer(srv.base_url, srv.settings)
    finally:
        srv.stop()


# Network faults


@dataclass
class _Link:
    """One proxied TCP connection; `drop_up` / `drop_down` swallow what flows that way."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    drop_up: bool = False
    drop_down: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """A loopback TCP proxy in front of a server port. Faults apply to the connections open at
    the time: `stall()` silently swallows their traffic (one way or both, sockets stay open, as
    a dead mobile network does), `cut()` resets them. New connections pass untouched."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: list[_Link] = []
        self.accepted = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self.links.append(link)
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, link, up=True)),
            asyncio.create_task(self._pump(up_reader, writer, link, up=False)),
        ]

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link, *, up: bool
    ) -> None:
        try:
            while data := await src.read(65536):
                if link.drop_up if up else link.drop_down:
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()

    def stall(self, *, up: bool = True, down: bool = True) -> int:
        """Swallow the traffic of the open connections; returns how many were stalled."""
        for link in self.links:
            link.drop_up = link.drop_up or up
            link.drop_down = link.drop_down or down
        return len(self.links)

    def cut(self) -> None:
        """Reset every open connection (both sides see the connection drop)."""
        for link in self.links:
            link.client.transport.abort()
            link.upstream.transport.abort()
        self.links = []

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


@pytest.fixture
async def proxy(live_server: LiveServer) -> AsyncIterator[FaultProxy]:
    port = int(live_server.base_url.rsplit(":", 1)[1])
    fault = FaultProxy(port)
    await fault.start()
    try:
        yield fault
    finally:
        await fault.close()


# The server's own records (what a checker reads after the fact)


async def stored_fix_seqs(settings: Settings, race_id: str, runner_id: str) -> list[int]:
    """The seqs of every fix the server stored for a runner, one entry per stored fix (a fix
    stored twice would appear twice)."""
    engine = create_engine(settings.database_url)
    chunks = RaceFixChunkRow.__table__  # type: ignore[attr-defined]
    try:
        async with engine.connect() as conn:
            stmt = select(chunks).where(
                chunks.c.race_id == race_id, chunks.c.runner_id == runner_id
            )
            rows = (await conn.execute(stmt)).all()
    finally:
        await engine.dispose()
    seqs: list[int] = []
    for row in sorted(rows, key=lambda r: r.chunk):
        count = len(decode_track(row.data))
        assert count == row.last_seq - row.first_seq + 1, "the SDK numbers fixes 1, 2, 3 ..."
        seqs += range(row.first_seq, row.last_seq + 1)
    return seqs
