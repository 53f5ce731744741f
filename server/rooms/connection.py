"""One socket of a room: a bounded outgoing queue, drained by a sender task when needed.

The room never waits on a socket: `deliver` writes a frame at once when the socket's transport
takes it (`server.rooms.direct`: no task switch, no coroutine chain, the common case), and
otherwise queues it for the sender task (made then, on first need), which waits for the
transport to drain. A newer
standings frame replaces an unsent older one, so a slow phone gets the latest standings, not a
backlog. A consumer whose
queue overflows, or whose socket has not taken a frame for `max_lag_s`, is closed with 1013
(it may reconnect and resume); the others never notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from starlette.websockets import WebSocket

from server.metrics import WS_CLOSED, WS_FRAMES_ASGI, WS_FRAMES_DIRECT
from server.rooms.backplane.base import Outbound
from server.rooms.direct import DirectWriter

#: Frames (events, direct frames) a connection may have waiting before it counts as too slow.
MAX_QUEUED = 1024
MAX_LAG_S = 5.0
CLOSE_WAIT_S = 30.0
SLOW_CONSUMER = 1013
NORMAL = 1000


class Connection:
    """A signed-in socket in a room (a backplane `Subscriber`)."""

    #: One per socket, thousands to a room: slots, no instance dict.
    __slots__ = (
        "_busy",
        "_closer",
        "_conn_id",
        "_direct",
        "_max_lag_s",
        "_max_queued",
        "_moderator",
        "_queue",
        "_runner_id",
        "_sender",
        "_sending_since",
        "_sent_seq",
        "_standings",
        "_wake",
        "_welcomed",
        "close_code",
        "done",
        "follows",
        "role",
        "ws",
    )

    def __init__(
        self,
        ws: WebSocket,
        runner_id: str,
        role: str,
        *,
        moderator: bool,
        max_queued: int = MAX_QUEUED,
        max_lag_s: float = MAX_LAG_S,
        follows: tuple[str, ...] = (),
        direct: bool = True,
    ) -> None:
        self.ws = ws
        #: Runners this socket spots: their standings rows are spliced in as `"spotted"`.
        self.follows = follows
        self._conn_id = uuid.uuid4().hex
        self._runner_id = runner_id
        self.role = role
        self._moderator = moderator
        #: Frames not yet written, oldest first: a list, as most of the time it is empty (an
        #: empty deque holds a 64-slot block; thousands of sockets each keep one).
        self._queue: list[Outbound] = []
        self._standings: Outbound | None = None  # the unsent standings frame in the queue
        #: Set when the sender task has work; made with the task, on the first frame that
        #: cannot be written directly (most sockets never need either).
        self._wake: asyncio.Event | None = None
        self._max_queued = max_queued
        self._max_lag_s = max_lag_s
        self._welcomed = False
        self._sent_seq = 0
        self._sending_since = 0.0
        self.close_code = 0
        #: Resolved once the socket is closed (or its sender found it gone).
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        #: Synchronous writes while the sender task is idle (None: every frame through ASGI).
        self._direct = DirectWriter.of(ws._send) if direct else None
        #: The sender task holds a frame it is sending: no direct write may overtake it.
        self._busy = False

    @property
    def conn_id(self) -> str:
        return self._conn_id

    @property
    def runner_id(self) -> str:
        return self._runner_id

    @property
    def moderator(self) -> bool:
        return self._moderator

    def _wake_sender(self) -> None:
        """Hand the queue to the sender task (started on first use)."""
        if self._wake is None:
            self._wake = asyncio.Event()
            self._sender = asyncio.create_task(self._send_loop(), name=f"ws-send-{self._conn_id}")
        self._wake.set()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def deliver(self, out: Outbound) -> None:
        """Queue a frame (never blocks); too slow a consumer is closed with 1013."""
        if self.close_code:
            return
        if out.kind == "close":
            self.close(out.close_code, flush=True)
            return
        if self._sending_since and time.monotonic() - self._sending_since > self._max_lag_s:
            self.close(SLOW_CONSUMER)
            return
        q = self._queue
        if out.kind == "welcome" or out.kind == "replay":
            # it supersedes every queued event up to its seq (and the client's earlier view)
            kept = [o for o in q if o.kind not in ("event", "standings") or o.seq > out.seq]
            q.clear()
            q.extend(kept)
            q.insert(0, out) if out.kind == "welcome" else q.append(out)
            self._standings = None
            self._welcomed = True
        elif out.kind == "standings":
            if self._standings is not None:
                with contextlib.suppress(ValueError):
                    q.remove(self._standings)
            self._standings = out
            q.append(out)
        else:
            if len(q) >= self._max_queued:
                self.close(SLOW_CONSUMER)
                return
            q.append(out)
        if not self._busy and self._welcomed and self._direct is not None and self._drain_direct():
            return
        self._wake_sender()

    def _drain_direct(self) -> bool:
        """Write the queued frames now, in order; False when the transport stops taking them
        (or a replay is next): the sender task sends the rest, waiting for the transport."""
        q, direct = self._queue, self._direct
        assert direct is not None
        while q:
            out = q[0]
            if out.kind == "replay":
                return False
            if not self._already_sent(out):
                if not direct.send(self._text(out)):
                    return False
                WS_FRAMES_DIRECT.inc()
            q.pop(0)
            if out is self._standings:
                self._standings = None
            self._mark_sent(out)
        return True

    def _already_sent(self, item: Outbound) -> bool:
        """An event this socket has had (a replay or a welcome covered it)."""
        return item.kind == "event" and item.seq <= self._sent_seq

    def _mark_sent(self, item: Outbound) -> None:
        if item.kind == "event":
            self._sent_seq = max(self._sent_seq, item.seq)
        elif item.kind == "welcome":
            self._sent_seq = item.seq

    def _text(self, out: Outbound) -> str:
        if out.kind == "standings":
            personal = out.personal or {}
            you = personal.get(self._runner_id)
            tail = ',"you":' + you if you is not None else ""
            if self.follows:
                rows = [personal[r] for r in self.follows if r in personal]
                tail += ',"spotted":[' + ",".join(rows) + "]"
            return out.text + tail + "}"
        if out.kind == "pong":
            return out.text + ',"t2":' + repr(round(time.time(), 6)) + "}"
        return out.text

    async def _send_loop(self) -> None:
        ws, q, wake = self.ws, self._queue, self._wake
        assert wake is not None
        try:
            while True:
                if not q or not self._welcomed:
                    wake.clear()
                    await wake.wait()
                    continue
                self._busy = True
                out = q.pop(0)
                self._sending_since = time.monotonic()
                if out is self._standings:
                    self._standings = None
                replay = out.kind == "replay"
                for item in out.batch if replay else (out,):
                    if not replay and self._already_sent(item):
                        continue
                    self._mark_sent(item)
                    self._sending_since = time.monotonic()
                    try:  # a timeout scope, not wait_for: no task per frame
                        async with asyncio.timeout(self._max_lag_s):
                            await ws.send_text(self._text(item))
                        WS_FRAMES_ASGI.inc()
                    except TimeoutError:  # its socket has taken nothing for a while
                        self._sending_since = 0.0
                        self.close(SLOW_CONSUMER)
                        return
                self._sending_since = 0.0
                self._busy = False
                if out.kind == "replay":
                    self._sent_seq = max(self._sent_seq, out.seq)
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went away: the reader sees the disconnect
            self._finish()

    def close(self, code: int, *, flush: bool = False, reason: str = "") -> None:
        """Close the socket with `code`: at once, or after the queued frames (`flush`)."""
        if self.close_code:
            return
        self.close_code = code
        if code != NORMAL:  # a 1000 is the end of a socket, whoever ended it: not counted
            WS_CLOSED.labels(str(code)).inc()
        self._closer = asyncio.create_task(self._close(code, flush, reason))

    async def _close(self, code: int, flush: bool, reason: str) -> None:
        sender = self._sender
        try:
            if flush and sender is not None and not sender.done():
                deadline = time.monotonic() + CLOSE_WAIT_S
                while (
                    (self._queue or self._sending_since)
                    and time.monotonic() < deadline
                    and not sender.done()
                ):
                    await asyncio.sleep(0.01)
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
            # a slow consumer's close frame waits behind what its socket holds; bounded
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(code, reason), CLOSE_WAIT_S)
        finally:
            self._finish()

    async def stop(self) -> None:
        """Cancel the sender (the socket is gone)."""
        for task in (self._sender, self._closer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
