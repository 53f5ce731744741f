"""The FastAPI application factory and the lifespan that owns long-lived resources."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TypedDict
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Receive, Scope, Send

from server.api import (
    account,
    auth,
    challenges,
    clubs,
    drills,
    health,
    moderation,
    privacy,
    profile,
    races,
    runs,
    spotters,
    streams,
)
from server.api import boards as boards_api
from server.api.boards import PageCache
from server.boards import Leaderboards, leaderboards_from_settings
from server.boards.keeper import start_keeper
from server.config import Settings
from server.errors import add_exception_handlers
from server.limits import AbuseLimitsMiddleware
from server.observability import RequestContextMiddleware, configure_logging
from server.projections import build_projections
from server.rooms import ws
from server.rooms.backplane import backplane_from_settings
from server.rooms.registry import RoomRegistry
from server.scheduler import run_scheduler, tick
from server.store.db import create_engine
from server.store.event_store import EventStore
from server.store.migrate import ensure_current, upgrade
from server.store.projections import ProjectionRunner
from server.web import web_client


class State(TypedDict):
    """What the lifespan hands to every request (read back through `server.deps`)."""

    settings: Settings
    engine: AsyncEngine
    store: EventStore
    redis: Redis | None
    boards: Leaderboards
    projections: ProjectionRunner
    rooms: RoomRegistry
    board_pages: PageCache


class RetroRunApp(FastAPI):
    """FastAPI, with room sockets (`/ws/rooms/{room_id}`) served before its routing."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            room_id = ws.room_id_of(scope["path"])
            if room_id is not None:
                await ws.serve(scope, receive, send, room_id)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Settings are resolved now, so a bad configuration fails before serving."""
    settings = (settings or Settings()).resolved()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[State]:
        configure_logging(settings.log_json, settings.debug)
        if settings.sqlite_path is not None:
            settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        if settings.should_auto_migrate:
            await asyncio.to_thread(upgrade, settings.database_url)
        engine = create_engine(settings.database_url, echo=False)
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        stop = asyncio.Event()
        try:
            await ensure_current(engine)
            store = EventStore(engine)
            boards = leaderboards_from_settings(settings, engine, redis)
            runner = ProjectionRunner(store, build_projections(boards))
            await tick(
                store,
                boards,
                runner,
                ZoneInfo(settings.weekly_tz),
                datetime.now(UTC),
                settings.rotation(),
            )
            tasks = [
                asyncio.create_task(runner.run_forever(stop), name="projections"),
                asyncio.create_task(
                    run_scheduler(store, boards, runner, settings, stop), name="scheduler"
                ),
            ]
            # Redis boards: rebuilt from the log when Redis lost them (now, and watched after)
            keeper = await start_keeper(boards, store, build_projections(boards), stop)
            tasks += [keeper] if keeper is not None else []
            rooms = RoomRegistry(
                store,
                backplane_from_settings(settings, redis),
                tick_hz=settings.room_tick_hz,
                safety=settings.safety_policy(),
            )
            rooms.start()
            _app.state.drain_rooms = rooms.drain  # `retrorun serve` drains before it shuts down
            try:
                yield State(
                    settings=settings,
                    engine=engine,
                    store=store,
                    redis=redis,
                    boards=boards,
                    projections=runner,
                    rooms=rooms,
                    board_pages=PageCache(),
                )
            finally:
                await rooms.close(1012)  # stores buffered fixes; sockets: "server restarting"
                stop.set()
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                store.close()
        finally:
            if redis is not None:
                await redis.aclose()
            await engine.dispose()

    app = RetroRunApp(
        title="RetroRun",
        version="0.1.0",
        summary="Gamified multiplayer challenges for backward running, with GPS pace checks.",
        lifespan=lifespan,
        debug=settings.debug,
    )
    app.state.settings = settings
    add_exception_handlers(app)
    app.add_middleware(AbuseLimitsMiddleware, settings=settings)  # inside: 429s get a request id
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    for module in (
        auth,
        account,
        profile,
        clubs,
        challenges,
        runs,
        races,
        drills,
        boards_api,
        moderation,
        spotters,
        streams,
        privacy,
    ):
        app.include_router(module.router, prefix="/api/v1")
    # Last, so every route above wins: the phone client's static files at `/`.
    web = web_client()
    if web is not None:
        app.mount("/", web, name="web")
    return app
