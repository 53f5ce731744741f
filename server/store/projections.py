"""Projections: read models fed from the event log, each with a stored checkpoint.

A projection's `apply` runs in the same transaction that moves its checkpoint, so a read model in
the database sees every event exactly once, across restarts. `rebuild` resets the read models and
replays from position 0 through the very same `apply`, so rebuilt and live read models agree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.db import writer
from server.store.event_store import EventStore, RecordedEvent
from server.store.tables import ProjectionCheckpoint

CHECKPOINTS = ProjectionCheckpoint.__table__  # type: ignore[attr-defined]
log = logging.getLogger(__name__)


class Projection(Protocol):
    """A read model. `apply` must only touch the connection it is given."""

    name: str

    async def apply(self, conn: AsyncConnection, events: Sequence[RecordedEvent]) -> None: ...

    async def reset(self, conn: AsyncConnection) -> None: ...


async def checkpoint(conn: AsyncConnection, name: str) -> int:
    """The last position `name` has applied (0 if it never ran)."""
    stmt = select(CHECKPOINTS.c.position).where(CHECKPOINTS.c.name == name)
    return int((await conn.execute(stmt)).scalar_one_or_none() or 0)


async def _save_checkpoint(conn: AsyncConnection, name: str, position: int) -> None:
    values = {"name": name, "position": position, "updated_at": datetime.now(UTC)}
    ins = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = ins(CHECKPOINTS).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[CHECKPOINTS.c.name],
        set_={"position": stmt.excluded.position, "updated_at": stmt.excluded.updated_at},
    )
    await conn.execute(stmt)


class ProjectionRunner:
    """Feeds projections from the log in commit order; one transaction per batch."""

    def __init__(
        self,
        store: EventStore,
        projections: Sequence[Projection],
        *,
        batch_size: int = 500,
        poll_s: float = 1.0,
    ) -> None:
        self.store = store
        self.projections = list(projections)
        self.batch_size = batch_size
        self.poll_s = poll_s
        #: Events this process has applied so far; caches of read models key on it.
        self.applied = 0

    async def catch_up(self, projection: Projection) -> int:
        """Apply every event past the projection's checkpoint; returns how many it applied."""
        applied = 0
        while True:
            async with self.store.engine.connect() as raw:
                conn = await writer(raw)
                async with conn.begin():
                    if conn.dialect.name == "postgresql":  # one catch-up per projection at a time
                        await conn.execute(
                            text("SELECT pg_advisory_xact_lock(hashtext(:n))"),
                            {"n": "projection:" + projection.name},
                        )
                    after = await checkpoint(conn, projection.name)
                    batch = await self.store.read_all_in(conn, after, self.batch_size)
                    if not batch:
                        return applied
                    await projection.apply(conn, batch)
                    await _save_checkpoint(conn, projection.name, batch[-1].position)
            applied += len(batch)
            self.applied += len(batch)

    async def run_once(self) -> int:
        """Catch every projection up; returns the number of events applied in total."""
        total = 0
        for p in self.projections:
            total += await self.catch_up(p)
        return total

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Catch up whenever this process appends, and poll for other processes' appends."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:  # a failed batch rolls back; retry after the poll interval
                log.exception("projection batch failed; retrying")
            await self.store.wait_for_append(self.poll_s)

    async def rebuild(self) -> int:
        """Reset every read model and replay the whole log into it."""
        self.applied += 1  # the read models change even when the log is empty
        for p in self.projections:
            async with self.store.engine.connect() as raw:
                conn = await writer(raw)
                async with conn.begin():
                    await p.reset(conn)
                    await conn.execute(
                        update(CHECKPOINTS).where(CHECKPOINTS.c.name == p.name).values(position=0)
                    )
        return await self.run_once()
