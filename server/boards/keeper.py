"""Redis boards that Redis lost are noticed and rebuilt from the event log.

Redis runs without persistence (docs/operations.md): a restart or a failover leaves the boards
empty while the projection checkpoints in the database say they are up to date, and the live
projection only rewrites the entries of runners it hears about again. So every process watches a
sentinel key, written once the boards were last built completely. When it is missing, the process
that takes the rebuild lease (`server.leases`) replays the log into the boards and writes the
sentinel again; the others keep watching.

The replay runs each projection over the log up to its checkpoint inside one database
transaction that is rolled back: the read models are reset and rebuilt in that transaction only
(so `evolve`-like handlers see the same rows as in live operation, and the boards get the very
values, `reached_at` included, a `retrorun rebuild` would give), while the board writes go to
Redis and stay. On PostgreSQL the transaction takes the projection's advisory lock first, like
every live batch: live batches wait for the replay (reads keep working) and then continue after
the checkpoint, so no board write of a live batch is overtaken by an older replayed one. On
SQLite the replay's write transaction serialises with the live batches by itself.

The sentinel and the lease live beside the boards' prefix (`<prefix>-meta:...`), not under it, so
`clear_all` (a rebuild) does not remove them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text

from server.boards.redis import RedisLeaderboards
from server.leases import Lease, Leases
from server.store.db import writer
from server.store.event_store import EventStore
from server.store.projections import Projection, checkpoint

log = logging.getLogger(__name__)

#: The rebuild lease outlives a silent holder this long; the holder renews it every third.
LEASE_TTL_MS = 30_000
#: How often each process looks for the sentinel.
CHECK_EVERY_S = 1.0
REPLAY_BATCH = 500

# KEYS: lease, sentinel. ARGV: lease value, sentinel value. Sets the sentinel only while the
# lease is still the caller's: a Redis that lost its data again meanwhile has no lease either.
_MARK_BUILT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


async def replay_boards(store: EventStore, projections: Sequence[Projection]) -> int:
    """Replay the log up to each projection's checkpoint through it, in a transaction that is
    rolled back: only what the projection writes outside the database (Redis boards) stays.
    Returns the number of events replayed."""
    replayed = 0
    for projection in projections:
        async with store.engine.connect() as raw:
            conn = await writer(raw)
            tx = await conn.begin()
            try:
                if conn.dialect.name == "postgresql":  # the lock every live batch takes
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(hashtext(:n))"),
                        {"n": "projection:" + projection.name},
                    )
                upto = await checkpoint(conn, projection.name)
                await projection.reset(conn)
                after = 0
                while after < upto:
                    batch = [
                        e
                        for e in await store.read_all_in(conn, after, REPLAY_BATCH)
                        if e.position <= upto
                    ]
                    if not batch:
                        break
                    await projection.apply(conn, batch)
                    after = batch[-1].position
                    replayed += len(batch)
            finally:
                await tx.rollback()
    return replayed


class BoardsKeeper:
    """Watches the Redis boards' sentinel and rebuilds the boards when Redis lost them."""

    def __init__(
        self,
        boards: RedisLeaderboards,
        store: EventStore,
        projections: Sequence[Projection],
        *,
        node: str | None = None,
        lease_ttl_ms: int = LEASE_TTL_MS,
    ) -> None:
        self.redis: Redis = boards.redis
        self.store = store
        self.projections = list(projections)
        self.sentinel = f"{boards.prefix}-meta:built"
        self.lease_key = f"{boards.prefix}-meta:rebuild"
        self.fence_key = f"{boards.prefix}-meta:rebuild-fence"
        self.lease_ttl_ms = lease_ttl_ms
        self.leases = Leases(self.redis, node or uuid.uuid4().hex[:12])
        self._mark = self.redis.register_script(_MARK_BUILT)
        #: Rebuilds this process ran (for tests and logs).
        self.rebuilds = 0

    async def built(self) -> bool:
        """The boards were built completely since Redis last lost its data."""
        return bool(await self.redis.exists(self.sentinel))

    async def check_once(self) -> bool:
        """Rebuild the boards when the sentinel is missing and this process gets the lease.
        True when this call rebuilt them."""
        if await self.built():
            return False
        lease = await self.leases.acquire(self.lease_key, self.fence_key, self.lease_ttl_ms)
        if lease is None:
            return False  # another process is rebuilding
        keep = asyncio.create_task(self._keep(lease), name="boards-rebuild-lease")
        try:
            if await self.built():  # another process finished between our two looks
                return False
            started = time.monotonic()
            log.warning("Redis boards missing (Redis lost its data?): rebuilding from the log")
            replayed = await replay_boards(self.store, self.projections)
            value = f"{lease.token}:{self.leases.holder}:{time.time():.3f}"
            marked = int(
                await self._mark(keys=[self.lease_key, self.sentinel], args=[lease.value, value])
            )
            self.rebuilds += 1
            log.warning(
                "Redis boards rebuilt from %d events in %.2f s%s",
                replayed,
                time.monotonic() - started,
                "" if marked else " (lease lost meanwhile: left for the next check)",
            )
            return bool(marked)
        finally:
            keep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep
            with contextlib.suppress(RedisError, OSError):
                await self.leases.release(lease)

    async def _keep(self, lease: Lease) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl_ms / 3000)
            with contextlib.suppress(RedisError, OSError):
                await self.leases.renew(lease)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Check every `CHECK_EVERY_S` until `stop`; failures are logged and retried."""
        while not stop.is_set():
            try:
                await self.check_once()
            except (RedisError, OSError) as exc:
                log.warning("boards check: Redis unreachable (%s); retrying", exc)
            except Exception:
                log.exception("boards rebuild failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CHECK_EVERY_S)


async def start_keeper(
    boards: object, store: EventStore, projections: Sequence[Projection], stop: asyncio.Event
) -> asyncio.Task[None] | None:
    """For Redis boards: check once now (a fresh Redis gets its boards before the first
    request), then keep watching in a task. None for other backends (nothing to lose)."""
    if not isinstance(boards, RedisLeaderboards):
        return None
    keeper = BoardsKeeper(boards, store, projections)
    try:
        await keeper.check_once()
    except (RedisError, OSError) as exc:  # /readyz reports it; the task keeps trying
        log.warning("boards check: Redis unreachable at start-up (%s)", exc)
    except Exception:  # the database, most likely: the task keeps trying
        log.exception("boards rebuild at start-up failed; retrying in the background")
    return asyncio.create_task(keeper.run_forever(stop), name="boards-keeper")
