"""The event store contract runs against every backend: SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import SQLModel

import server.store.read_models
import server.store.tables  # noqa: F401  (every table registered in the metadata)
from server.store.db import create_engine
from server.store.event_store import EventStore
from server.store.migrate import upgrade
from tests.conftest import in_thread

#: Every table the migrations create (a new one is truncated without touching this file).
_TABLES = sorted(SQLModel.metadata.tables)


@pytest.fixture(scope="session")
def _pg_schema(pg_url: str) -> str:
    in_thread(upgrade, pg_url)
    return pg_url


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.db'}"
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    url = request.getfixturevalue("_pg_schema")
    yield url
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(_TABLES)} RESTART IDENTITY"))
    await engine.dispose()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[EventStore]:
    engine = create_engine(database_url)
    store = EventStore(engine)
    try:
        yield store
    finally:
        store.close()
        await engine.dispose()
