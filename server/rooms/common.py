"""Pieces every room kind shares: the numbered broadcast stream, addressing, resume, writes.

A room numbers its broadcasts (`seq`, +1 each, no gaps) under an `epoch` that changes whenever
the room lost its history (a restart), keeps the last `HISTORY` of them for `resume`, and
publishes everything through the backplane, encoded once (`Broadcasts`). Its writes go through
one task, in order, with a periodic flush of what it buffers (`WriteQueue`). The race room
(room.py) and the drill room (drill_room.py) both build on these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from game.errors import DomainError
from server.rooms.backplane.base import Backplane, Outbound
from server.rooms.protocol import encode, error
from server.store.db import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)

HISTORY = 1000
#: Close code once a room is over (race closed or aborted, drill finished): do not reconnect.
ROOM_OVER = 4504
#: Account roles that may control any room.
CONTROLLER_ROLES = ("moderator", "admin")


def to_connection(out: Outbound, conn_id: str) -> Outbound:
    """The same frame, addressed to one connection."""
    return Outbound(
        out.kind, out.text, "connection", conn_id, out.seq, out.personal, out.batch, out.close_code
    )


class Broadcasts:
    """A room's output: numbered broadcasts with history, direct frames, replay on resume."""

    def __init__(self, room_id: str, backplane: Backplane, history: int = HISTORY) -> None:
        self.room_id = room_id
        self.backplane = backplane
        self.epoch = secrets.token_hex(6)
        self.seq = 0
        self.history: deque[Outbound] = deque(maxlen=history)
        #: The stream version the previous owner's broadcasts covered (None: nothing known).
        self.covered: int | None = None

    async def publish(self, out: Outbound) -> None:
        await self.backplane.publish(self.room_id, out)

    async def broadcast(self, frame: Mapping[str, Any], version: int = 0) -> Outbound:
        """Number `frame`, keep it for resumes and send it to everyone in the room (`version`:
        the stream version of the event it reports, if any)."""
        self.seq += 1
        text = encode({**frame, "seq": self.seq, "epoch": self.epoch})
        out = Outbound("event", text, seq=self.seq, version=version)
        self.history.append(out)
        await self.publish(out)
        return out

    async def direct(self, conn_id: str, text: str) -> None:
        await self.publish(Outbound("direct", text, audience="connection", to=conn_id))

    async def to_runner(self, runner_id: str, text: str) -> None:
        """A frame for every connection of one account."""
        await self.publish(Outbound("direct", text, audience="runner", to=runner_id))

    async def refuse(self, conn_id: str, code: str, message: str, ref: str | None) -> None:
        await self.direct(conn_id, error(code, message, ref))

    async def close(self, code: int, conn_id: str | None = None) -> None:
        """Close every socket of the room (or one connection) with `code`, after its queue."""
        out = Outbound("close", "", close_code=code)
        await self.publish(out if conn_id is None else to_connection(out, conn_id))

    async def replay(self, conn_id: str, after_seq: int, epoch: str | None) -> bool:
        """Replay the broadcasts after `after_seq`; False when that is impossible (an older
        seq than the history holds, or another epoch): the caller sends a fresh welcome."""
        hist = self.history
        oldest = hist[0].seq if hist else self.seq + 1
        if (epoch is not None and epoch != self.epoch) or not (oldest - 1 <= after_seq <= self.seq):
            return False
        batch = tuple(o for o in hist if o.seq > after_seq)
        await self.publish(Outbound("replay", "", "connection", conn_id, seq=self.seq, batch=batch))
        return True


async def handle_inbox(
    name: str, inbox: asyncio.Queue[Any], handle: Callable[[Any], Awaitable[None]]
) -> None:
    """A room's input task: each message in turn; one that fails is logged, not fatal."""
    while True:
        msg = await inbox.get()
        try:
            await handle(msg)
        except Exception:
            log.exception("%s: input failed", name)


#: Jobs every `WriteQueue` knows: store what is buffered now; stop after the jobs before it.
FLUSH, STOP = "flush", "stop"
#: A write that fails (not a refusal: the database is down) is retried after this, doubling.
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0


class WriteQueue:
    """A room's writes on one task, in order: each job as it comes (`run(job)`, `FLUSH`
    included), and `flush()` every `flush_s`. A job stays queued until `run` returns; a
    refusal (`DomainError`, e.g. a stale lease's fence) drops it; any other failure (the
    database is down or restarting) retries it first, after a pause that doubles up to
    `RETRY_MAX_S`, so a finish or a control command survives an outage. `stop` lets the task
    finish what it holds (never cancelled mid-commit), flushes and ends it."""

    def __init__(
        self,
        name: str,
        flush_s: float,
        run: Callable[[Any], Awaitable[None]],
        flush: Callable[[], Awaitable[None]],
    ) -> None:
        self.name = name
        self._flush_s = flush_s
        self._run = run
        self._flush = flush
        self._jobs: deque[Any] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __bool__(self) -> bool:
        """Jobs are waiting."""
        return bool(self._jobs)

    def put(self, job: Any) -> None:
        self._jobs.append(job)
        self._ready.set()

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._loop(), name=f"{self.name}-write")
        return self._task

    async def stop(self, timeout_s: float = 15.0) -> None:
        task = self._task
        if task is None:
            return
        self.put(FLUSH)
        self.put(STOP)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except Exception:
            log.exception("%s: writer did not stop cleanly", self.name)
            task.cancel()

    async def _loop(self) -> None:
        next_flush = time.monotonic() + self._flush_s
        pause = RETRY_FIRST_S
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), max(0.0, next_flush - time.monotonic()))
            self._ready.clear()
            try:
                while self._jobs:
                    job = self._jobs[0]  # taken off only once done: a failed write is retried
                    if job == STOP:
                        return
                    await self._refusable(self._run(job))
                    self._jobs.popleft()
                    pause = RETRY_FIRST_S
                if time.monotonic() >= next_flush:
                    await self._refusable(self._flush())
                    next_flush = time.monotonic() + self._flush_s
                    pause = RETRY_FIRST_S
            except Exception as exc:  # the database is down or restarting: try again, later
                if isinstance(exc, DATABASE_UNAVAILABLE):  # expected in an outage: no traceback
                    log.warning(
                        "%s: write failed, database unavailable (%s); retrying in %.1f s",
                        self.name, type(exc).__name__, pause,
                    )  # fmt: skip
                else:
                    log.exception("%s: write failed (retrying in %.1f s)", self.name, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                self._ready.set()

    async def _refusable(self, write: Awaitable[None]) -> None:
        """Run a write; a refusal (`DomainError`, e.g. `stale_fence`: this process's lease
        moved on) is logged and the write dropped, never retried."""
        try:
            await write
        except DomainError as exc:
            log.warning("%s: write refused (%s): dropped", self.name, exc.code)
