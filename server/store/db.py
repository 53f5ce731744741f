"""Database engines: the async engine for the app, with SQLite tuned for concurrent use."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import orjson
from asyncpg.exceptions import OperatorInterventionError, PostgresConnectionError
from sqlalchemy import Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.exc import DisconnectionError, InterfaceError, InvalidatePoolError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from server.config import to_async_url

#: A database that is busy, restarting or unreachable: the API answers 503 with
#: Retry-After, never a 500 (server/errors.py), and the rooms retry quietly
#: (SQLAlchemy's wrappers, the pool's checkout timeout, and asyncpg's and the OS's connection
#: errors where a driver connection is used directly).
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
    PostgresConnectionError,
    OperatorInterventionError,
    ConnectionError,
)


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
        kwargs.update(pool_size=10, max_overflow=20, pool_recycle=1800)
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        _tune_sqlite(engine)
    elif engine.dialect.driver == "asyncpg":
        _ping_on_checkout(engine)
    return engine


_UNPINGED: ContextVar[bool] = ContextVar("retrorun_unpinged", default=False)


async def connect_unpinged(engine: AsyncEngine) -> AsyncConnection:
    """A pooled connection checked out without the ping, for a caller whose first statement
    is itself the ping: one that is safe to run again on a new connection when the pooled one
    turns out to be dead (`EventStore` on PostgreSQL). The caller closes it."""
    conn = engine.connect()
    token = _UNPINGED.set(True)
    try:
        await conn.start()
    finally:
        _UNPINGED.reset(token)
    return conn


def _ping_on_checkout(engine: AsyncEngine) -> None:
    """`pool_pre_ping` in one round trip instead of three.

    SQLAlchemy's asyncpg ping wraps its `;` in BEGIN … ROLLBACK (for pgbouncer's transaction
    mode, which we do not use), so every checkout cost three round trips before any work. Same
    behaviour otherwise: a fresh connection is not pinged, and a failed ping invalidates the
    whole pool (the server restarted) and checks out a new connection, so no request fails on
    a stale connection.
    """
    target = engine.sync_engine

    @event.listens_for(target, "connect")
    def _fresh(_dbapi_conn: Any, record: Any) -> None:
        record.info["retrorun_fresh"] = True

    @event.listens_for(target, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if record.info.pop("retrorun_fresh", False) or _UNPINGED.get():
            return
        try:
            await_only(dbapi_conn.driver_connection.fetchrow(";"))
        except Exception as exc:  # any failure on an idle pooled connection: it is gone
            raise InvalidatePoolError(f"ping failed: {exc!r}") from exc


def sqlite_writer_engine(engine: AsyncEngine, pool_size: int = 1) -> Engine | None:
    """A synchronous engine on the same SQLite file, for the event store's writer thread (or,
    with a bigger pool, its reader threads).

    None for in-memory databases (a second engine would open a different database).
    """
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or "mode=memory" in str(engine.url):
        return None
    sync = create_sync_engine(
        engine.url.set(drivername="sqlite"),
        pool_size=pool_size,
        max_overflow=0,
        pool_reset_on_return=None,
    )
    _tune_sqlite(sync)
    return sync


def _tune_sqlite(engine: AsyncEngine | Engine) -> None:
    """WAL, a busy timeout, and transactions we begin ourselves (IMMEDIATE for writers).

    pysqlite's own transaction handling defers BEGIN and never takes the write lock up front, so a
    read-then-write transaction can fail with "database is locked" instead of waiting. We turn it
    off and emit BEGIN (readers) or BEGIN IMMEDIATE (writers, `execution_options(immediate=True)`).
    """

    target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(target, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(target, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


async def writer(conn: AsyncConnection) -> AsyncConnection:
    """Mark a connection as a writer before its transaction begins (SQLite: BEGIN IMMEDIATE)."""
    return await conn.execution_options(immediate=True)
