"""uvicorn's `websockets-sansio` WebSocket protocol, holding less for each open socket.

A race room keeps thousands of sockets open for hours, so what each one holds once it is open
counts (docs/benchmarks.md, "Rooms"). uvicorn's protocol keeps things it no longer needs, or
one of a thing for each socket where one for all will do:

- the handshake's request and response (two `Headers` objects and their strings) after the
  response went out; the ASGI scope keeps its own copy of the request headers. websockets'
  parser generator keeps a reference to the request for the socket's life, so its headers are
  emptied, not just let go;
- an `asyncio.Queue` for the socket's incoming messages: three deques (the items, the getters,
  the putters) of ~0.7 KiB each, where one consumer (the app's `receive`) and no bounded puts
  need one deque made on demand and one waiter;
- an `asyncio.Event` for "the transport takes writes", whose deque of waiters (~0.7 KiB) is
  almost always empty: a `Flag` keeps its waiters in a list made on demand;
- a loop timer per socket for its keepalive (the next ping, or the pong's deadline): one
  `Keepalive` per loop keeps every socket's in two queues, on one timer.

`retrorun serve` runs this protocol (`ws=` in server/cli.py) and the room tests do too; the
rooms' direct writes (server/rooms/direct.py) rely on the same attributes as on uvicorn's own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import weakref
from collections import deque
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame

log = logging.getLogger(__name__)


class Inbox:
    """What `asyncio.Queue` does for one consumer and unbounded puts, in less memory."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] | None = None
        self._waiter: asyncio.Future[Any] | None = None

    def put_nowait(self, item: Any) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done() and not self._items:
            self._waiter = None
            waiter.set_result(item)
            return
        if self._items is None:
            self._items = deque()
        self._items.append(item)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        items = self._items
        if items:
            item = items.popleft()
            if not items:
                self._items = None  # an empty deque still holds a 64-slot block
            return item
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            return await waiter
        except asyncio.CancelledError:
            if self._waiter is waiter:
                self._waiter = None
            if waiter.done() and not waiter.cancelled():  # handed over, then cancelled: keep it
                if self._items is None:
                    self._items = deque()
                self._items.appendleft(waiter.result())
            raise


class Flag:
    """What `asyncio.Event` does (`set`, `clear`, `is_set`, `wait`), in less memory."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        try:
            return await fut
        finally:
            if self._waiters is not None and fut in self._waiters:
                self._waiters.remove(fut)


class Keepalive:
    """Every socket's keepalive on one loop timer: pings due and pong deadlines in two queues.

    uvicorn arms a loop timer per socket for its next ping or its pong deadline (~0.6 KiB each,
    with its bound method). Here a socket is an entry in a queue instead. The sockets of one
    `Keepalive` share one ping interval and one pong timeout, so entries come due in the order
    they were queued, and the timer pops them off the front every `RESOLUTION_S` (a ping or a
    deadline may be that late). A socket has one live entry at a time, the one whose due time
    is its `_keepalive_due` (the same float object): a stopped or rescheduled socket's older
    entry is skipped when it comes up.
    """

    RESOLUTION_S = 0.25

    __slots__ = ("_loop", "_pings", "_pongs", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pings: deque[tuple[float, LeanWebSocketProtocol]] = deque()
        self._pongs: deque[tuple[float, LeanWebSocketProtocol]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._pings) + len(self._pongs)

    def ping_after(self, proto: LeanWebSocketProtocol, delay_s: float) -> None:
        self._queue(self._pings, proto, delay_s)

    def pong_within(self, proto: LeanWebSocketProtocol, delay_s: float) -> None:
        self._queue(self._pongs, proto, delay_s)

    def _queue(
        self,
        queue: deque[tuple[float, LeanWebSocketProtocol]],
        proto: LeanWebSocketProtocol,
        delay_s: float,
    ) -> None:
        due = self._loop.time() + delay_s
        proto._keepalive_due = due
        queue.append((due, proto))
        if self._timer is None:
            self._timer = self._loop.call_later(self.RESOLUTION_S, self._run)

    def _run(self) -> None:
        self._timer = None
        now = self._loop.time()
        try:
            due_now = (
                (self._pongs, LeanWebSocketProtocol.keepalive_timeout),
                (self._pings, LeanWebSocketProtocol.send_keepalive_ping),
            )
            for queue, act in due_now:
                while queue and queue[0][0] <= now:
                    due, proto = queue.popleft()
                    if proto._keepalive_due is due:
                        proto._keepalive_due = None
                        try:
                            act(proto)
                        except Exception:  # one dying socket stops no other's keepalive
                            log.exception("keepalive of a WebSocket failed")
        finally:
            if self._timer is None and (self._pings or self._pongs):
                self._timer = self._loop.call_later(self.RESOLUTION_S, self._run)


#: `Keepalive`s by event loop, then by (ping interval, pong timeout): entries come due in order.
_WHEELS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[float | None, float | None], Keepalive]
] = weakref.WeakKeyDictionary()


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with a lighter inbox and write flag, no handshake
    kept, the keepalive of every socket on one timer (`Keepalive`), and its attributes in slots.

    uvicorn's protocol sets 37 attributes. CPython (3.11 to 3.13) shares one key table among a
    class's instance dicts only up to 30 keys; past that each instance gets a dict of its own
    (~1.5 KiB). Declared as slots here, uvicorn's own assignments fill them and the instance
    dict stays empty (tests/rooms/test_ws_protocol.py checks it after a handshake, so an
    attribute a newer uvicorn adds shows up there).
    """

    # uvicorn 0.55's attributes, in the order it sets them; a name the base class defines
    # itself (a default a newer uvicorn might add) is left to it, as a slot would hide it
    __slots__ = tuple(
        name
        for name in (
            *("config", "app", "loop", "logger", "root_path", "asgi_version", "app_state"),
            *("connections", "tasks", "default_headers", "transport", "server", "client"),
            *("scheme", "queue", "handshake_initiated", "handshake_complete", "close_sent"),
            *("disconnected", "close_timer", "close_timeout", "initial_response", "conn"),
            *("read_paused", "writable", "ping_interval", "ping_timeout", "ping_timer"),
            *("pong_timer", "pending_ping_payload", "ping_sent_at", "last_ping_rtt", "frames"),
            *("curr_msg_data_type", "request", "response", "scope", "_keepalive_due"),
        )
        if not hasattr(WebSocketsSansIOProtocol, name)
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()
        #: The due time of this socket's entry in the server's `Keepalive` (None: no entry).
        self._keepalive_due: float | None = None

    def _keepalive(self) -> Keepalive:
        """The keepalive queues of this loop and this socket's interval and timeout."""
        wheels = _WHEELS.get(self.loop)
        if wheels is None:
            wheels = _WHEELS[self.loop] = {}
        key = (self.ping_interval, self.ping_timeout)
        wheel = wheels.get(key)
        if wheel is None:
            wheel = wheels[key] = Keepalive(self.loop)
        return wheel

    # keepalive: uvicorn's ping and pong payloads and its 1011 close, without a timer per socket;
    # the next ping is due an interval after the pong (uvicorn: after the ping, minus the rtt)

    def start_keepalive(self) -> None:
        if self.ping_interval is not None and self.ping_interval > 0:
            self.schedule_ping()

    def stop_keepalive(self) -> None:
        self._keepalive_due = None
        self.pending_ping_payload = None

    def schedule_ping(self) -> None:
        assert self.ping_interval is not None
        self._keepalive().ping_after(self, self.ping_interval)

    def send_keepalive_ping(self) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        self.pending_ping_payload = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = self.loop.time()
        self.conn.send_ping(self.pending_ping_payload)
        self.transport.write(b"".join(self.conn.data_to_send()))
        if self.ping_timeout is not None:
            self._keepalive().pong_within(self, self.ping_timeout)
        else:
            self.schedule_ping()

    def handle_pong(self, event: Frame) -> None:
        if self.pending_ping_payload is None or bytes(event.data) != self.pending_ping_payload:
            return  # unsolicited, or an answer to an older ping
        self.last_ping_rtt = self.loop.time() - self.ping_sent_at
        self.pending_ping_payload = None
        if self.ping_timeout is not None and self._keepalive_due is not None:
            self.schedule_ping()  # the pong deadline's entry is now stale

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # the handshake is over: its request and response are never read again
            self.request.headers.clear()
            self.response.headers.clear()
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]
