"""The event store: one append-only `events` table with optimistic concurrency per stream.

Appends are atomic per call. Global `position` order equals commit order: on PostgreSQL every
append takes one transaction-scoped advisory lock before it draws positions, so a reader that has
seen position N can never later find a smaller position committing (no skipped events); SQLite
serialises writers by itself (BEGIN IMMEDIATE). Positions may have holes (a rolled-back append
burns its sequence values on PostgreSQL); stream versions never do.

Fencing: a stream written by one owner at a time (a live race room, whose owner holds a lease in
Redis) is appended with the owner's `fence` token. Inside the append's transaction the stream's
row in `stream_fences` is raised to the token, or the append is refused (`StaleFence`) when a
higher token already wrote: an owner whose lease lapsed cannot write after its successor did,
even at a version that would pass the optimistic check (docs/decisions.md, "Fenced appends").
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from game.errors import Conflict
from game.events import to_data
from server import metrics
from server.store.db import connect_unpinged, sqlite_writer_engine, writer
from server.store.tables import IdempotencyKey, StoredEvent, StreamFence

EVENTS = StoredEvent.__table__  # type: ignore[attr-defined]
IDEMPOTENCY = IdempotencyKey.__table__  # type: ignore[attr-defined]
FENCES = StreamFence.__table__  # type: ignore[attr-defined]

#: Columns in `RecordedEvent` field order, so a result row maps positionally (no per-field
#: `Row.__getattr__`, which was ~40 % of replay time).
_COLUMNS = (
    EVENTS.c.position,
    EVENTS.c.stream_id,
    EVENTS.c.version,
    EVENTS.c.type,
    EVENTS.c.schema_version,
    EVENTS.c.data,
    EVENTS.c.meta,
    EVENTS.c.recorded_at,
)

#: SQLite writer-thread statements. Storage formats match what SQLAlchemy writes through the
#: async engine: JSON as orjson text, DateTime as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC).
_SQLITE_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?"
_SQLITE_INSERT = (
    "INSERT INTO events (stream_id, version, type, schema_version, data, meta, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_IDEM_SELECT = (
    "SELECT stream_id, first_version, last_version, last_position FROM idempotency_keys "
    "WHERE key = ?"
)
_SQLITE_IDEM_INSERT = (
    "INSERT INTO idempotency_keys (key, stream_id, first_version, last_version, last_position, "
    "recorded_at) VALUES (?, ?, ?, ?, ?, ?)"
)

#: Raise a stream's fence to the token, or return no row when a higher token holds it. Same
#: text on both engines (SQLite 3.35+ upserts with RETURNING).
_FENCE_SQL = (
    "INSERT INTO stream_fences (stream_id, token) VALUES ({s}, {t}) "
    "ON CONFLICT (stream_id) DO UPDATE SET token = excluded.token "
    "WHERE stream_fences.token <= excluded.token RETURNING token"
)
_FENCE = text(_FENCE_SQL.format(s=":sid", t=":token"))
_SQLITE_FENCE = _FENCE_SQL.format(s="?", t="?")
_SQLITE_FENCE_GET = "SELECT token FROM stream_fences WHERE stream_id = ?"

#: PostgreSQL append at an expected version in one statement: the version check rides in the
#: INSERT. It runs after the advisory-lock statement, so its READ COMMITTED snapshot already
#: sees every earlier append; no row inserted means the stream moved on.
_PG_CHECKED_INSERT = text(
    "INSERT INTO events (stream_id, version, type, schema_version, data, meta, recorded_at) "
    "SELECT CAST(:sid AS varchar), CAST(:expected AS integer) + t.ord, t.type, t.sv, "
    "CAST(t.data AS jsonb), CAST(:meta AS jsonb), CAST(:at AS timestamptz) "
    "FROM unnest(CAST(:types AS text[]), CAST(:svs AS integer[]), CAST(:datas AS text[])) "
    "WITH ORDINALITY AS t(type, sv, data, ord) "
    "WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = CAST(:sid AS varchar)) "
    "= CAST(:expected AS integer) "
    "RETURNING position"
)

#: Key of the PostgreSQL advisory lock that orders appends (any constant; "RRUN" in ASCII).
_APPEND_LOCK_KEY = 0x5252554E

#: PostgreSQL fast path on the driver connection (asyncpg): BEGIN and the advisory lock go in one
#: simple-query round trip, then the checked insert (a statement asyncpg keeps prepared), then
#: COMMIT: three round trips where SQLAlchemy's begin/execute/commit took four.
_PG_BEGIN_LOCKED = f"BEGIN; SELECT pg_advisory_xact_lock({_APPEND_LOCK_KEY})"
_PG_RAW_CHECKED_INSERT = (
    "INSERT INTO events (stream_id, version, type, schema_version, data, meta, recorded_at) "
    "SELECT $1::varchar, $2::integer + t.ord, t.type, t.sv, t.data::jsonb, $3::text::jsonb, "
    "$4::timestamptz "
    "FROM unnest($5::text[], $6::integer[], $7::text[]) WITH ORDINALITY AS t(type, sv, data, ord) "
    "WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1::varchar) "
    "= $2::integer "
    "RETURNING position"
)
#: An unfenced append in one statement and one round trip, committed on its own (autocommit).
#: The lock is a MATERIALIZED CTE read by the first term of the one-time filter, so it is taken
#: before any row is produced, i.e. before `nextval` draws a position (the plan is
#: `Result (One-Time Filter: lock AND version) -> Function Scan on unnest`), and held to the
#: commit: position order is still commit order. The statement's snapshot predates the lock
#: wait, so the version subquery may miss an append that committed during the wait; the insert
#: then lands on a version that exists and the unique (stream_id, version) key refuses it
#: (a conflict, as it should be). No gap and no duplicate version either way.
_PG_APPEND_ONE_TRIP = (
    f"WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock({_APPEND_LOCK_KEY})) "
    "INSERT INTO events (stream_id, version, type, schema_version, data, meta, recorded_at) "
    "SELECT $1::varchar, $2::integer + t.ord, t.type, t.sv, t.data::jsonb, $3::text::jsonb, "
    "$4::timestamptz "
    "FROM unnest($5::text[], $6::integer[], $7::text[]) WITH ORDINALITY AS t(type, sv, data, ord) "
    "WHERE (SELECT count(*) FROM lock) = 1 "
    "AND (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1::varchar) "
    "= $2::integer "
    "RETURNING position"
)
_PG_RAW_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1"
_PG_RAW_FENCE = _FENCE_SQL.format(s="$1::varchar", t="$2::bigint")
_PG_RAW_FENCE_GET = "SELECT token FROM stream_fences WHERE stream_id = $1"
_COLUMN_LIST = "position, stream_id, version, type, schema_version, data, meta, recorded_at"
#: PostgreSQL reads take the JSON columns as text and parse them with orjson directly (the
#: driver's jsonb codec would call a Python wrapper per value).
_PG_COLUMN_LIST = (
    "position, stream_id, version, type, schema_version, data::text, meta::text, recorded_at"
)
_PG_RAW_READ_ALL = (
    f"SELECT {_PG_COLUMN_LIST} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
)
_PG_RAW_LOAD = (
    f"SELECT {_PG_COLUMN_LIST} FROM events WHERE stream_id = $1 AND version > $2 ORDER BY version"
)

#: SQLite reads on the reader threads (sqlite3 directly: one thread hop per read, rows mapped
#: there with orjson and `datetime.fromisoformat` instead of SQLAlchemy's result processors).
_SQLITE_LOAD = (
    f"SELECT {_COLUMN_LIST} FROM events WHERE stream_id = ? AND version > ? ORDER BY version"
)
_SQLITE_READ_ALL = f"SELECT {_COLUMN_LIST} FROM events WHERE position > ? ORDER BY position LIMIT ?"
_SQLITE_READERS = 2


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def _driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under a pooled SQLAlchemy connection."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    return driver


class ConcurrencyError(Conflict):
    """The stream moved on since the caller read it: reload, decide again, retry."""

    code = "version_conflict"

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, not the expected {expected}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class StaleFence(Conflict):
    """The stream was appended with a higher fence token: the caller's lease lapsed and another
    owner took the stream over. Nothing was written; the caller must stop writing."""

    code = "stale_fence"

    def __init__(self, stream_id: str, token: int, held: int | None) -> None:
        super().__init__(
            f"stream {stream_id!r} is fenced at token {held}: an append with token {token} "
            "comes from an owner whose lease lapsed"
        )
        self.stream_id = stream_id
        self.token = token
        self.held = held


class IdempotencyMismatch(Conflict):
    """An idempotency key was reused for a different stream."""

    code = "idempotency_key_reused"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended."""

    type: str
    data: Mapping[str, Any]
    schema_version: int = 1

    @classmethod
    def of(cls, domain_event: Any) -> NewEvent:
        """Wrap a registered domain event (see `game.events.event`)."""
        return cls(domain_event.type, to_data(domain_event), domain_event.schema_version)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored."""

    position: int
    stream_id: str
    version: int
    type: str
    schema_version: int
    data: dict[str, Any]
    meta: dict[str, Any]
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an append landed. `duplicate` is true when an idempotency key replayed it."""

    stream_id: str
    first_version: int
    last_version: int
    last_position: int
    duplicate: bool = False
    #: When the events were recorded (None for a duplicate): with `last_position` it names the
    #: last event exactly (the command path's state cache checks the log against it).
    recorded_at: datetime | None = None


@dataclass
class _Notifier:
    """Wakes local subscribers after a commit (other processes poll)."""

    event: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.event.set()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout_s)
        self.event.clear()


class EventStore:
    """Append, load and read the event log. Each call is its own transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self._notifier = _Notifier()
        # SQLite: appends run whole on one writer thread with a sync connection, one thread hop
        # per append instead of one per statement (aiosqlite). SQLite has one writer anyway.
        self._sqlite_sync = sqlite_writer_engine(engine)
        self._sqlite_writer = (
            ThreadPoolExecutor(1, thread_name_prefix="event-store-writer")
            if self._sqlite_sync is not None
            else None
        )
        # SQLite reads (`load`, `read_all`) run on reader threads with their own connections (WAL
        # lets them read beside the writer): one thread hop per read instead of aiosqlite's
        # several (BEGIN, execute, fetch, ROLLBACK).
        self._sqlite_readers = (
            ThreadPoolExecutor(_SQLITE_READERS, thread_name_prefix="event-store-reader")
            if self._sqlite_sync is not None
            else None
        )
        self._writer_raw: PoolProxiedConnection | None = None
        self._sqlite_read = sqlite_writer_engine(engine, pool_size=_SQLITE_READERS)
        self._reader_local = threading.local()
        self._reader_conns: list[PoolProxiedConnection] = []
        self._reader_lock = threading.Lock()

    def close(self) -> None:
        """Release the SQLite threads and their connections (the engine stays the caller's)."""
        if self._sqlite_writer is not None:
            self._sqlite_writer.shutdown(wait=True)
        if self._writer_raw is not None:
            self._writer_raw.close()
            self._writer_raw = None
        if self._sqlite_readers is not None:
            self._sqlite_readers.shutdown(wait=True)
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        if self._sqlite_read is not None:
            self._sqlite_read.dispose()
        if self._sqlite_sync is not None:
            self._sqlite_sync.dispose()

    async def append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        *,
        meta: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        fence: int | None = None,
    ) -> AppendResult:
        """Append `events` to a stream if it is at `expected_version` (None: any version).

        With an `idempotency_key` that was used before, nothing is written and the first
        append's result comes back with `duplicate=True`. With a `fence` token, the append is
        refused (`StaleFence`) when the stream was appended with a higher token before.
        """
        if not events:
            raise ValueError("append needs at least one event")
        if self._sqlite_writer is not None:
            result = await asyncio.get_running_loop().run_in_executor(
                self._sqlite_writer,
                self._append_sqlite,
                stream_id,
                expected_version,
                events,
                meta,
                idempotency_key,
                fence,
            )
            if not result.duplicate:
                metrics.EVENTS_APPENDED.inc(len(events))
                self._notifier.notify()
            return result
        if self.is_postgres and expected_version is not None and idempotency_key is None:
            result = await self._append_pg(stream_id, expected_version, events, meta, fence)
            metrics.EVENTS_APPENDED.inc(len(events))
            self._notifier.notify()
            return result
        async with self.engine.connect() as raw:
            conn = await writer(raw)
            async with conn.begin():
                result = await self.append_in(
                    conn,
                    stream_id,
                    expected_version,
                    events,
                    meta=meta,
                    idempotency_key=idempotency_key,
                    fence=fence,
                )
        if not result.duplicate:
            metrics.EVENTS_APPENDED.inc(len(events))
            self._notifier.notify()
        return result

    async def append_in(
        self,
        conn: AsyncConnection,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        *,
        meta: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        fence: int | None = None,
    ) -> AppendResult:
        """`append` inside a transaction the caller owns (and commits). A `StaleFence` leaves
        the transaction for the caller to roll back (nothing of this append was written)."""
        if not events:
            raise ValueError("append needs at least one event")
        if self.is_postgres:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _APPEND_LOCK_KEY})
        if fence is not None:
            await self._raise_fence(conn, stream_id, fence)
        if self.is_postgres and expected_version is not None and idempotency_key is None:
            return await self._append_checked_pg(conn, stream_id, expected_version, events, meta)
        if idempotency_key is not None:
            first = await self._idempotent_result(conn, idempotency_key, stream_id)
            if first is not None:
                return first
        current = await self._current_version(conn, stream_id)
        if expected_version is not None and current != expected_version:
            raise ConcurrencyError(stream_id, expected_version, current)
        now = datetime.now(UTC)
        meta_doc = dict(meta or {})
        if idempotency_key is not None:
            meta_doc["idempotency_key"] = idempotency_key
        rows = [
            {
                "stream_id": stream_id,
                "version": current + i,
                "type": e.type,
                "schema_version": e.schema_version,
                "data": dict(e.data),
                "meta": meta_doc,
                "recorded_at": now,
            }
            for i, e in enumerate(events, start=1)
        ]
        try:
            positions = (
                (await conn.execute(insert(EVENTS).returning(EVENTS.c.position), rows))
                .scalars()
                .all()
            )
        except IntegrityError as exc:  # a writer outside the lock discipline won the race
            actual = await self._current_version(conn, stream_id)
            raise ConcurrencyError(stream_id, current, actual) from exc
        result = AppendResult(
            stream_id, current + 1, current + len(events), max(positions), recorded_at=now
        )
        if idempotency_key is not None:
            await conn.execute(
                insert(IDEMPOTENCY).values(
                    key=idempotency_key,
                    stream_id=stream_id,
                    first_version=result.first_version,
                    last_version=result.last_version,
                    last_position=result.last_position,
                    recorded_at=now,
                )
            )
        return result

    async def _raise_fence(self, conn: AsyncConnection, stream_id: str, token: int) -> None:
        """Raise the stream's fence to `token` in the caller's transaction, or refuse."""
        if (await conn.execute(_FENCE, {"sid": stream_id, "token": token})).first() is None:
            stmt = select(FENCES.c.token).where(FENCES.c.stream_id == stream_id)
            held = (await conn.execute(stmt)).scalar_one_or_none()
            raise StaleFence(stream_id, token, held)

    async def raise_fence(self, stream_id: str, token: int) -> None:
        """Raise the stream's fence to `token` without appending (a new owner, right after it
        took the lease and before it loads the stream), or refuse with `StaleFence`."""
        async with self.engine.connect() as raw:
            conn = await writer(raw)
            async with conn.begin():
                await self._raise_fence(conn, stream_id, token)

    async def fence_of(self, stream_id: str) -> int | None:
        """The highest fence token that appended to the stream (None: never fenced)."""
        async with self.engine.connect() as conn:
            stmt = select(FENCES.c.token).where(FENCES.c.stream_id == stream_id)
            value = (await conn.execute(stmt)).scalar_one_or_none()
            return None if value is None else int(value)

    async def _append_pg(
        self,
        stream_id: str,
        expected: int,
        events: Sequence[NewEvent],
        meta: Mapping[str, Any] | None,
        fence: int | None,
    ) -> AppendResult:
        """`append` at an expected version on PostgreSQL, on the driver connection: one
        statement when unfenced; with a fence, the statements of `append_in` (advisory lock,
        fence, checked insert) in three round trips."""
        dumps = orjson.dumps
        at = datetime.now(UTC)
        args = (
            stream_id,
            expected,
            dumps(dict(meta or {})).decode(),
            at,
            [e.type for e in events],
            [e.schema_version for e in events],
            [dumps(dict(e.data)).decode() for e in events],
        )
        if fence is None:
            return await self._append_pg_one_trip(stream_id, expected, len(events), args)
        conn, pg = await self._pg_connection()
        try:
            try:
                await pg.execute(_PG_BEGIN_LOCKED)
            except Exception:
                if not pg.is_closed():
                    raise
                conn, pg = await self._pg_reconnect(conn)  # nothing ran: run it once more
                await pg.execute(_PG_BEGIN_LOCKED)
            if fence is not None and await pg.fetchrow(_PG_RAW_FENCE, stream_id, fence) is None:
                held = await pg.fetchval(_PG_RAW_FENCE_GET, stream_id)
                raise StaleFence(stream_id, fence, held)
            try:
                positions = await pg.fetch(_PG_RAW_CHECKED_INSERT, *args)
            except asyncpg.UniqueViolationError as exc:  # a writer outside the lock won
                raise ConcurrencyError(stream_id, expected, expected + 1) from exc
            if not positions:
                actual = await pg.fetchval(_PG_RAW_VERSION, stream_id)
                raise ConcurrencyError(stream_id, expected, int(actual))
            await pg.execute("COMMIT")
        except BaseException:
            # SQLAlchemy does not know about this transaction, so its reset on return would
            # not end it: roll back here, or drop the connection (and with it the transaction
            # and the advisory lock) when that fails.
            try:
                await pg.execute("ROLLBACK")
            except BaseException:
                await conn.invalidate()
                raise
            raise
        finally:
            await conn.close()
        last = max(r[0] for r in positions)
        return AppendResult(stream_id, expected + 1, expected + len(events), last, recorded_at=at)

    async def _append_pg_one_trip(
        self, stream_id: str, expected: int, count: int, args: tuple[Any, ...]
    ) -> AppendResult:
        conn, pg = await self._pg_connection()
        try:
            try:
                try:
                    rows = await pg.fetch(_PG_APPEND_ONE_TRIP, *args)
                except asyncpg.UniqueViolationError:
                    raise
                except Exception:
                    if not pg.is_closed():
                        raise
                    # A dead pooled connection. Running the append again is safe even if the
                    # first one did commit: it is at the same expected version, so it would be
                    # refused as a conflict, never written twice.
                    conn, pg = await self._pg_reconnect(conn)
                    rows = await pg.fetch(_PG_APPEND_ONE_TRIP, *args)
            except asyncpg.UniqueViolationError as exc:  # moved on during the lock wait
                raise ConcurrencyError(stream_id, expected, expected + 1) from exc
            if not rows:
                actual = await pg.fetchval(_PG_RAW_VERSION, stream_id)
                raise ConcurrencyError(stream_id, expected, int(actual))
        except asyncio.CancelledError:  # cut off mid-statement: drop the connection
            await conn.invalidate()
            raise
        finally:
            await conn.close()
        last = max(r[0] for r in rows)
        return AppendResult(stream_id, expected + 1, expected + count, last, recorded_at=args[3])

    async def _pg_connection(self) -> tuple[AsyncConnection, Any]:
        """A pooled connection and its asyncpg driver, without the checkout ping: the caller's
        first statement pings, and on a dead connection it calls `_pg_reconnect` and runs that
        statement again (safe: nothing ran on the dead one)."""
        conn = await connect_unpinged(self.engine)
        return conn, await _driver(conn)

    async def _pg_reconnect(self, dead: AsyncConnection) -> tuple[AsyncConnection, Any]:
        await dead.invalidate()
        await dead.close()
        conn = self.engine.connect()
        await conn.start()  # pinged: a server restart invalidates the whole pool here
        return conn, await _driver(conn)

    async def _append_checked_pg(
        self,
        conn: AsyncConnection,
        stream_id: str,
        expected: int,
        events: Sequence[NewEvent],
        meta: Mapping[str, Any] | None,
    ) -> AppendResult:
        """PostgreSQL, advisory lock already held: check and insert in one round trip."""
        dumps = orjson.dumps
        now = datetime.now(UTC)
        params = {
            "sid": stream_id,
            "expected": expected,
            "meta": dumps(dict(meta or {})).decode(),
            "at": now,
            "types": [e.type for e in events],
            "svs": [e.schema_version for e in events],
            "datas": [dumps(dict(e.data)).decode() for e in events],
        }
        try:
            positions = (await conn.execute(_PG_CHECKED_INSERT, params)).scalars().all()
        except IntegrityError as exc:  # a writer outside the lock discipline won the race
            raise ConcurrencyError(stream_id, expected, expected + 1) from exc
        if not positions:
            raise ConcurrencyError(
                stream_id, expected, await self._current_version(conn, stream_id)
            )
        last = max(positions)
        return AppendResult(stream_id, expected + 1, expected + len(events), last, recorded_at=now)

    def _append_sqlite(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        meta: Mapping[str, Any] | None,
        idempotency_key: str | None,
        fence: int | None = None,
    ) -> AppendResult:
        """`append` on the writer thread: BEGIN IMMEDIATE … COMMIT with driver SQL."""
        assert self._sqlite_sync is not None
        dumps = orjson.dumps
        raw = self._writer_raw
        if raw is None:  # the writer thread keeps its one connection: no pool round per append
            raw = self._writer_raw = self._sqlite_sync.raw_connection()
        cur = raw.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                if (
                    fence is not None
                    and cur.execute(_SQLITE_FENCE, (stream_id, fence)).fetchone() is None
                ):
                    held = cur.execute(_SQLITE_FENCE_GET, (stream_id,)).fetchone()
                    raise StaleFence(stream_id, fence, None if held is None else held[0])
                if idempotency_key is not None:
                    row = cur.execute(_SQLITE_IDEM_SELECT, (idempotency_key,)).fetchone()
                    if row is not None:
                        cur.execute("ROLLBACK")
                        if row[0] != stream_id:
                            raise IdempotencyMismatch(
                                "this Idempotency-Key was already used for a different request"
                            )
                        return AppendResult(row[0], row[1], row[2], row[3], duplicate=True)
                current = cur.execute(_SQLITE_VERSION, (stream_id,)).fetchone()[0]
                if expected_version is not None and current != expected_version:
                    raise ConcurrencyError(stream_id, expected_version, current)
                now = datetime.now(UTC)
                at = now.strftime("%Y-%m-%d %H:%M:%S.%f")
                meta_doc = dict(meta or {})
                if idempotency_key is not None:
                    meta_doc["idempotency_key"] = idempotency_key
                meta_s = dumps(meta_doc).decode()
                rows = [
                    (
                        stream_id,
                        current + i,
                        e.type,
                        e.schema_version,
                        dumps(dict(e.data)).decode(),
                        meta_s,
                        at,
                    )
                    for i, e in enumerate(events, start=1)
                ]
                try:
                    if len(rows) == 1:  # the common command: no executemany, no extra SELECT
                        cur.execute(_SQLITE_INSERT, rows[0])
                        last = cur.lastrowid
                    else:
                        cur.executemany(_SQLITE_INSERT, rows)
                        last = cur.execute("SELECT last_insert_rowid()").fetchone()[0]
                except sqlite3.IntegrityError as exc:  # cannot happen under BEGIN IMMEDIATE
                    raise ConcurrencyError(stream_id, current, current + 1) from exc
                result = AppendResult(
                    stream_id, current + 1, current + len(events), last, recorded_at=now
                )
                if idempotency_key is not None:
                    cur.execute(
                        _SQLITE_IDEM_INSERT,
                        (
                            idempotency_key,
                            stream_id,
                            result.first_version,
                            result.last_version,
                            last,
                            at,
                        ),
                    )
                cur.execute("COMMIT")
                return result
            except BaseException:
                if getattr(raw.driver_connection, "in_transaction", False):
                    cur.execute("ROLLBACK")
                raise
        finally:
            cur.close()

    async def _current_version(self, conn: AsyncConnection, stream_id: str) -> int:
        stmt = select(func.coalesce(func.max(EVENTS.c.version), 0)).where(
            EVENTS.c.stream_id == stream_id
        )
        return int((await conn.execute(stmt)).scalar_one())

    async def _idempotent_result(
        self, conn: AsyncConnection, key: str, stream_id: str
    ) -> AppendResult | None:
        row = (await conn.execute(select(IDEMPOTENCY).where(IDEMPOTENCY.c.key == key))).first()
        if row is None:
            return None
        if row.stream_id != stream_id:
            raise IdempotencyMismatch(
                "this Idempotency-Key was already used for a different request"
            )
        return AppendResult(
            row.stream_id, row.first_version, row.last_version, row.last_position, duplicate=True
        )

    async def version(self, stream_id: str) -> int:
        """The stream's current version (0 when it has no events)."""
        async with self.engine.connect() as conn:
            return await self._current_version(conn, stream_id)

    async def load(self, stream_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """The stream's events after `after_version`, in version order."""
        if self._sqlite_readers is not None:
            return await asyncio.get_running_loop().run_in_executor(
                self._sqlite_readers, self._read_sqlite, _SQLITE_LOAD, (stream_id, after_version)
            )
        if self.is_postgres:
            return await self._fetch_pg(_PG_RAW_LOAD, stream_id, after_version)
        stmt = (
            select(*_COLUMNS)
            .where(EVENTS.c.stream_id == stream_id, EVENTS.c.version > after_version)
            .order_by(EVENTS.c.version)
        )
        async with self.engine.connect() as conn:
            return [RecordedEvent(*r) for r in (await conn.execute(stmt)).tuples()]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to `limit` events of the whole log after `after_position`, in commit order."""
        if self._sqlite_readers is not None:
            return await asyncio.get_running_loop().run_in_executor(
                self._sqlite_readers, self._read_sqlite, _SQLITE_READ_ALL, (after_position, limit)
            )
        if self.is_postgres:
            return await self._fetch_pg(_PG_RAW_READ_ALL, after_position, limit)
        async with self.engine.connect() as conn:
            return await self.read_all_in(conn, after_position, limit)

    async def _fetch_pg(self, sql: str, *args: Any) -> list[RecordedEvent]:
        """One read on the asyncpg driver (no transaction; its first statement pings)."""
        conn, pg = await self._pg_connection()
        try:
            try:
                rows = await pg.fetch(sql, *args)
            except Exception:
                if not pg.is_closed():
                    raise
                conn, pg = await self._pg_reconnect(conn)
                rows = await pg.fetch(sql, *args)
        finally:
            await conn.close()
        loads = orjson.loads
        return [
            RecordedEvent(p, sid, v, t, sv, loads(data), loads(meta), at)
            for p, sid, v, t, sv, data, meta, at in rows
        ]

    def _read_sqlite(self, sql: str, params: tuple[Any, ...]) -> list[RecordedEvent]:
        """One read on a reader thread's own connection (autocommit: the SELECT is its own
        snapshot), rows mapped as SQLAlchemy would: JSON by orjson, naive times as UTC."""
        conn: sqlite3.Connection | None = getattr(self._reader_local, "conn", None)
        if conn is None:  # each reader thread keeps one connection (tuned like the engine's)
            assert self._sqlite_read is not None
            raw = self._sqlite_read.raw_connection()
            conn = raw.driver_connection
            assert isinstance(conn, sqlite3.Connection)
            conn.execute("PRAGMA query_only=ON")  # nothing can write through a reader
            self._reader_local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(raw)
        rows = conn.execute(sql, params).fetchall()
        loads, parse = orjson.loads, datetime.fromisoformat
        out: list[RecordedEvent] = []
        seen, at = None, _EPOCH
        for position, sid, version, type_, sv, data, meta, recorded in rows:
            if recorded != seen:  # one append's events share their time: parse it once
                seen, at = recorded, parse(recorded)
                if at.tzinfo is None:
                    at = at.replace(tzinfo=UTC)
            out.append(
                RecordedEvent(position, sid, version, type_, sv, loads(data), loads(meta), at)
            )
        return out

    async def read_all_in(
        self, conn: AsyncConnection, after_position: int, limit: int
    ) -> list[RecordedEvent]:
        stmt = (
            select(*_COLUMNS)
            .where(EVENTS.c.position > after_position)
            .order_by(EVENTS.c.position)
            .limit(limit)
        )
        return [RecordedEvent(*r) for r in (await conn.execute(stmt)).tuples()]

    async def head_position(self) -> int:
        """The position of the last committed event (0 for an empty log)."""
        async with self.engine.connect() as conn:
            stmt = select(func.coalesce(func.max(EVENTS.c.position), 0))
            return int((await conn.execute(stmt)).scalar_one())

    def notify_appended(self) -> None:
        """Wake local subscribers after a caller-owned transaction with `append_in` committed."""
        self._notifier.notify()

    async def wait_for_append(self, timeout_s: float) -> None:
        """Return after the next local append, or after `timeout_s` (other processes poll)."""
        await self._notifier.wait(timeout_s)
