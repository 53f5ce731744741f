"""The `retrorun` command line: serve, demo, migrate, rebuild, users, simulate."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
import uvicorn
from rich.console import Console

from server.config import Settings

app = typer.Typer(
    help="RetroRun: backward running challenges with GPS pace checks.", no_args_is_help=True
)
users = typer.Typer(help="Manage accounts.", no_args_is_help=True)
app.add_typer(users, name="users")
simulate = typer.Typer(
    help="Simulated runners against a server (runs `python -m clients.simulate`).",
    no_args_is_help=True,
)
app.add_typer(simulate, name="simulate")
console = Console()

HostOpt = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOpt = Annotated[int, typer.Option(help="TCP port.")]


#: glibc's `mallopt` parameter for the number of malloc arenas.
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas (`mallopt(M_ARENA_MAX)`), before any thread starts; True when
    the cap is set. glibc gives each thread that allocates its own arena (up to 8 a core), and
    memory freed in one arena is not reused by another: the database and worker threads then
    hold pages the event loop no longer can. Python's GIL serialises the threads anyway. 0, or
    a C library without `mallopt` (musl, macOS), leaves the allocator as it is."""
    if arenas <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_ARENA_MAX, arenas))


def _serve(settings: Settings, host: str, port: int) -> None:
    limit_malloc_arenas(settings.malloc_arenas)  # before the database's and workers' threads

    from server.app import create_app
    from server.http_guard import guarded_http_protocol
    from server.ws_protocol import LeanWebSocketProtocol

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        ws_max_size=64 * 1024,
        # uvicorn's websockets-sansio protocol, holding less per open socket
        # (server/ws_protocol.py). The rooms write frames straight to its transport
        # (server/rooms/direct.py) and encode each shared frame once: no per-socket
        # compression (docs/decisions.md).
        ws=LeanWebSocketProtocol,
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        # Idle keep-alive connections close after 5 s. httptools, pinned, with a deadline and a
        # size cap for request heads (slowloris): server/http_guard.py.
        timeout_keep_alive=5,
        http=guarded_http_protocol(settings.header_timeout_s, settings.header_max_bytes),
    )
    _DrainingServer(config, app, settings.gc_gen0).run()


class _DrainingServer(uvicorn.Server):
    """uvicorn, draining the rooms before it closes connections on shutdown. uvicorn shuts
    every connection at once (a WebSocket gets its close frame and the transport closes at
    once: a phone whose frames the server had not read yet gets a reset, 1006, instead of
    1012), and only then runs the app's shutdown. So: stop accepting, let the rooms store what
    they hold and close their sockets with a closing handshake, then shut down as usual."""

    DRAIN_S = 8.0

    def __init__(self, config: uvicorn.Config, app: Any, gc_gen0: int = 0) -> None:
        super().__init__(config)
        self._app = app
        self._gc_gen0 = gc_gen0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._gc_gen0:  # Settings.gc_gen0
            gc.collect()
            gc.freeze()
            _, gen1, gen2 = gc.get_threshold()
            gc.set_threshold(self._gc_gen0, gen1, gen2)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        drain = getattr(self._app.state, "drain_rooms", None)
        if drain is not None and not self.force_exit:
            deadline = time.monotonic() + self.DRAIN_S
            try:
                await asyncio.wait_for(drain(self.DRAIN_S), self.DRAIN_S)
            except Exception:
                console.print("[yellow]rooms did not drain cleanly[/yellow]")
            # uvicorn's shutdown would cut closing handshakes short: let them finish
            while self._closing_sockets() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        await super().shutdown(sockets)

    def _closing_sockets(self) -> int:
        """WebSockets that sent their close frame and wait for the client's."""
        return sum(
            1
            for c in self.server_state.connections
            if getattr(c, "close_sent", False) and not getattr(c, "disconnected", True)
        )


@app.command()
def serve(host: HostOpt = "127.0.0.1", port: PortOpt = 8000) -> None:
    """Run the server (settings from RETRORUN_* environment variables)."""
    settings = Settings()
    console.print(
        f"RetroRun on [bold]http://{host}:{port}/[/bold] (database {settings.database_url})"
    )
    _serve(settings, host, port)


@app.command()
def demo(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    simulate_race: Annotated[
        bool, typer.Option("--simulate/--no-simulate", help="Run a simulated race to watch.")
    ] = True,
) -> None:
    """Run the server on the embedded default with demo accounts ready to sign in, and a
    simulated race (8 runners, one of them cheating) once it is up."""
    settings = Settings()
    asyncio.run(_seed_demo(settings))
    console.print(
        f"\nRetroRun demo on [bold]http://{host}:{port}/[/bold]\n"
        f"  API docs: http://{host}:{port}/docs\n"
        "  sign in as [bold]demo[/bold] / [bold]backwards![/bold] (runner) or "
        "[bold]mod[/bold] / [bold]backwards![/bold] (moderator)\n"
    )
    sim = _DemoSimulation(host, port) if simulate_race else None
    if sim is not None:
        sim.start()
    try:
        _serve(settings, host, port)
    finally:
        if sim is not None:
            sim.stop()


def _simulator_command(args: list[str]) -> list[str]:
    """`python -m clients.simulate ...` in this interpreter. A subprocess, never an import:
    `server` must not import `clients` (the layers contract)."""
    return [sys.executable, "-m", "clients.simulate", *args]


@simulate.command(
    "race",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def simulate_race_command(ctx: typer.Context) -> None:
    """Simulate a live race: every option goes to `python -m clients.simulate race` (try
    `--help`): --base-url, --runners N, --race ID, --cheaters K, --speedup X, --moderator
    HANDLE:PASSWORD, --distance, --max-seconds ..."""
    code = subprocess.call(_simulator_command(["race", *ctx.args]))
    raise typer.Exit(code)


class _DemoSimulation:
    """Starts the race simulator once the demo server answers; stops it with the server."""

    RUNNERS, CHEATERS = 8, 1

    def __init__(self, host: str, port: int) -> None:
        self.connect_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.port = port
        self.url = f"http://{self.connect_host}:{port}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="demo-simulation", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _port_answers(self) -> bool:
        for _ in range(600):  # up to a minute for migrations and start-up
            if self._stop.is_set():
                return False
            try:
                with socket.create_connection((self.connect_host, self.port), timeout=0.5):
                    return True
            except OSError:
                self._stop.wait(0.1)
        return False

    def _has_race_api(self) -> bool:
        try:
            paths = httpx.get(f"{self.url}/openapi.json", timeout=10).json().get("paths", {})
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        return "/api/v1/races" in paths

    def _run(self) -> None:
        if not self._port_answers():
            return
        if not self._has_race_api():
            console.print(
                "[yellow]note: this server has no race API yet; no simulated race[/yellow]"
            )
            return
        args = ["race", "--base-url", self.url, "--runners", str(self.RUNNERS)]
        args += ["--cheaters", str(self.CHEATERS), "--no-live"]
        with self._lock:
            if self._stop.is_set():
                return
            console.print(
                f"\nsimulated race: {self.RUNNERS} runners ({self.CHEATERS} cheating) — "
                f"watch it at [bold]{self.url}/[/bold] (sign in as mod / backwards!)\n"
            )
            self._proc = subprocess.Popen(_simulator_command(args))

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _seed_demo(settings: Settings) -> None:
    from server import accounts

    await _create_users(
        settings,
        [
            ("demo", "backwards!", accounts.Role.RUNNER),
            ("mod", "backwards!", accounts.Role.MODERATOR),
        ],
        skip_existing=True,
    )


async def _create_users(
    settings: Settings, specs: list[tuple[str, str, str]], *, skip_existing: bool
) -> None:
    from sqlmodel.ext.asyncio.session import AsyncSession

    from server import accounts
    from server.store.db import create_engine
    from server.store.migrate import upgrade

    if settings.should_auto_migrate:
        await asyncio.to_thread(upgrade, settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        async with AsyncSession(engine) as session:
            for handle, password, role in specs:
                if skip_existing and await accounts.find_by_handle(session, handle):
                    continue
                await accounts.register(
                    session, handle, password, datetime.now(UTC), accounts.Role(role)
                )
            await session.commit()
    finally:
        await engine.dispose()


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the newest revision."""
    from server.store.migrate import upgrade

    settings = Settings()
    upgrade(settings.database_url)
    console.print(f"schema is up to date ({settings.database_url})")


@app.command()
def rebuild() -> None:
    """Rebuild every read model by replaying the event log from position 0."""
    settings = Settings()

    async def run() -> int:
        from redis.asyncio import Redis

        from server.boards import leaderboards_from_settings
        from server.projections import build_projections
        from server.store.db import create_engine
        from server.store.event_store import EventStore
        from server.store.migrate import ensure_current
        from server.store.projections import ProjectionRunner

        engine = create_engine(settings.database_url)
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        try:
            await ensure_current(engine)
            store = EventStore(engine)
            boards = leaderboards_from_settings(settings, engine, redis)
            try:
                return await ProjectionRunner(store, build_projections(boards)).rebuild()
            finally:
                store.close()
        finally:
            if redis is not None:
                await redis.aclose()
            await engine.dispose()

    count = asyncio.run(run())
    console.print(f"replayed {count} events into the read models")


@users.command("create")
def users_create(
    handle: Annotated[str, typer.Option(help="Unique handle (3-32 characters).")],
    password: Annotated[str, typer.Option(help="Password (8-128 characters).")],
    role: Annotated[str, typer.Option(help="runner, moderator or admin.")] = "runner",
) -> None:
    """Create an account (operators use this for moderators and admins)."""
    from game.errors import DomainError
    from server import accounts

    try:
        role_value = accounts.Role(role)
        asyncio.run(
            _create_users(Settings(), [(handle, password, role_value)], skip_existing=False)
        )
    except ValueError:
        console.print(f"[red]unknown role {role!r}: use runner, moderator or admin[/red]")
        raise typer.Exit(2) from None
    except DomainError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    console.print(f"created {role} {handle}")


if __name__ == "__main__":
    app()
