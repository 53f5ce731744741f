"""The event store: one append-only `events` table with optimistic concurrency per stream.

Appends are atomic per call. Global `position` order equals commit order: on PostgreSQL every
append takes one transaction-scoped advisory lock before it draws positions, so a reader that has
seen position N can never later find a smaller position committing (no skipped events); SQLite
serialises writers by itself (BEGIN IMMEDIATE). Positions may have holes (a rolled-back append
burns its sequence values on PostgreSQL); stream versions never do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from game.errors import Conflict
from game.events import to_data
from server import metrics
from server.store.db import writer
from server.store.tables import IdempotencyKey, StoredEvent

EVENTS = StoredEvent.__table__  # type: ignore[attr-defined]
IDEMPOTENCY = IdempotencyKey.__table__  # type: ignore[attr-defined]

#: Key of the PostgreSQL advisory lock that orders appends (any constant; "RRUN" in ASCII).
_APPEND_LOCK_KEY = 0x5252554E


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

    async def append(
        self,
        stream_id: str,
        expected_version: int | None,
        events: Sequence[NewEvent],
        *,
        meta: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append `events` to a stream if it is at `expected_version` (None: any version).

        With an `idempotency_key` that was used before, nothing is written and the first
        append's result comes back with `duplicate=True`.
        """
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
    ) -> AppendResult:
        """`append` inside a transaction the caller owns (and commits)."""
        if not events:
            raise ValueError("append needs at least one event")
        if self.is_postgres:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _APPEND_LOCK_KEY})
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
        result = AppendResult(stream_id, current + 1, current + len(events), max(positions))
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
        stmt = (
            select(EVENTS)
            .where(EVENTS.c.stream_id == stream_id, EVENTS.c.version > after_version)
            .order_by(EVENTS.c.version)
        )
        async with self.engine.connect() as conn:
            return [_recorded(r) for r in await conn.execute(stmt)]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to `limit` events of the whole log after `after_position`, in commit order."""
        async with self.engine.connect() as conn:
            return await self.read_all_in(conn, after_position, limit)

    async def read_all_in(
        self, conn: AsyncConnection, after_position: int, limit: int
    ) -> list[RecordedEvent]:
        stmt = (
            select(EVENTS)
            .where(EVENTS.c.position > after_position)
            .order_by(EVENTS.c.position)
            .limit(limit)
        )
        return [_recorded(r) for r in await conn.execute(stmt)]

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


def _recorded(row: Any) -> RecordedEvent:
    return RecordedEvent(
        position=row.position,
        stream_id=row.stream_id,
        version=row.version,
        type=row.type,
        schema_version=row.schema_version,
        data=row.data,
        meta=row.meta,
        recorded_at=row.recorded_at,
    )
