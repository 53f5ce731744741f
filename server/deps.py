"""Annotated dependencies: infrastructure as `XDep`, identities as role nouns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from server import accounts
from server.boards.base import Leaderboards
from server.config import Settings
from server.errors import ApiError
from server.security import InvalidToken, decode_token
from server.store.event_store import EventStore
from server.store.projections import ProjectionRunner
from server.store.tables import Runner


def get_settings(request: Request) -> Settings:
    settings: Settings = request.state.settings
    return settings


def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.state.engine
    return engine


def get_store(request: Request) -> EventStore:
    store: EventStore = request.state.store
    return store


def get_redis(request: Request) -> Redis | None:
    redis: Redis | None = request.state.redis
    return redis


def get_boards(request: Request) -> Leaderboards:
    boards: Leaderboards = request.state.boards
    return boards


def get_projections(request: Request) -> ProjectionRunner:
    runner: ProjectionRunner = request.state.projections
    return runner


async def get_session(
    engine: Annotated[AsyncEngine, Depends(get_engine)],
) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(engine, expire_on_commit=False) as session:
        yield session


async def get_write_session(
    engine: Annotated[AsyncEngine, Depends(get_engine)],
) -> AsyncIterator[AsyncSession]:
    """A session for read-then-write work that commits before the request ends.

    On SQLite it begins IMMEDIATE, so it waits for the write lock instead of failing when another
    writer committed after its first read. Never hold one open across other writes.
    """
    immediate = engine.execution_options(immediate=True)
    async with AsyncSession(immediate, expire_on_commit=False) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
EventStoreDep = Annotated[EventStore, Depends(get_store)]
RedisDep = Annotated[Redis | None, Depends(get_redis)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
WriteSessionDep = Annotated[AsyncSession, Depends(get_write_session)]
BoardsDep = Annotated[Leaderboards, Depends(get_boards)]
#: Write endpoints call `run_once()` after appending, so a client reads its own writes.
ProjectionsDep = Annotated[ProjectionRunner, Depends(get_projections)]

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
TokenDep = Annotated[str | None, Depends(oauth2_scheme)]

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


async def get_current_runner(token: TokenDep, session: SessionDep, settings: SettingsDep) -> Runner:
    if not token:
        raise ApiError(401, "unauthorized", "sign in first: send a bearer token", _UNAUTHORIZED)
    try:
        claims = decode_token(settings.secret_key, token)
    except InvalidToken as exc:
        raise ApiError(
            401, "invalid_token", "the token is invalid or expired", _UNAUTHORIZED
        ) from exc
    runner = await accounts.runner_for_token(session, claims, datetime.now(UTC))
    if runner is None:
        raise ApiError(401, "invalid_token", "the token was revoked", _UNAUTHORIZED)
    if runner.banned:
        raise ApiError(403, "banned", "this account is banned")
    return runner


CurrentRunner = Annotated[Runner, Depends(get_current_runner)]


async def get_moderator(runner: CurrentRunner) -> Runner:
    if runner.role not in ("moderator", "admin"):
        raise ApiError(403, "forbidden", "moderators only")
    return runner


Moderator = Annotated[Runner, Depends(get_moderator)]
