"""The `retrorun` command line: serve, demo, migrate, rebuild, users."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from server.config import Settings

app = typer.Typer(
    help="RetroRun: backward running challenges with GPS pace checks.", no_args_is_help=True
)
users = typer.Typer(help="Manage accounts.", no_args_is_help=True)
app.add_typer(users, name="users")
console = Console()

HostOpt = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOpt = Annotated[int, typer.Option(help="TCP port.")]


def _serve(settings: Settings, host: str, port: int) -> None:
    from server.app import create_app

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        ws_max_size=64 * 1024,
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
def demo(host: HostOpt = "127.0.0.1", port: PortOpt = 8000) -> None:
    """Run the server on the embedded default with demo accounts ready to sign in."""
    settings = Settings()
    asyncio.run(_seed_demo(settings))
    console.print(
        f"\nRetroRun demo on [bold]http://{host}:{port}/[/bold]\n"
        f"  API docs: http://{host}:{port}/docs\n"
        "  sign in as [bold]demo[/bold] / [bold]backwards![/bold] (runner) or "
        "[bold]mod[/bold] / [bold]backwards![/bold] (moderator)\n"
    )
    _serve(settings, host, port)


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
            return await ProjectionRunner(store, build_projections(boards)).rebuild()
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
