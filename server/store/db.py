"""Database engines: the async engine for the app, with SQLite tuned for concurrent use."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from server.config import to_async_url


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(database_url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for a URL a user would type (`sqlite:///x.db`, `postgresql://u@h/db`)."""
    url = to_async_url(database_url)
    kwargs: dict[str, Any] = {
        "echo": echo,
        "json_serializer": _json_dumps,
        "json_deserializer": orjson.loads,
    }
    if url.startswith("postgresql"):
        kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True, pool_recycle=1800)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _tune_sqlite(engine)
    return engine


def _tune_sqlite(engine: AsyncEngine) -> None:
    """WAL, a busy timeout, and transactions we begin ourselves (IMMEDIATE for writers).

    pysqlite's own transaction handling defers BEGIN and never takes the write lock up front, so a
    read-then-write transaction can fail with "database is locked" instead of waiting. We turn it
    off and emit BEGIN (readers) or BEGIN IMMEDIATE (writers, `execution_options(immediate=True)`).
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


async def writer(conn: AsyncConnection) -> AsyncConnection:
    """Mark a connection as a writer before its transaction begins (SQLite: BEGIN IMMEDIATE)."""
    return await conn.execution_options(immediate=True)
