"""uvicorn's `websockets-sansio` WebSocket protocol, holding less for each open socket.

A race room keeps thousands of sockets open for hours, so what each one holds once it is open
counts (docs/benchmarks.md, "Rooms"). uvicorn's protocol keeps two things it no longer needs:

- the handshake's request and response (two `Headers` objects and their strings) after the
  response went out; the ASGI scope keeps its own copy of the request headers. websockets'
  parser generator keeps a reference to the request for the socket's life, so its headers are
  emptied, not just let go;
- an `asyncio.Queue` for the socket's incoming messages: three deques (the items, the getters,
  the putters) of ~0.7 KiB each, where one consumer (the app's `receive`) and no bounded puts
  need one deque made on demand and one waiter;
- an `asyncio.Event` for "the transport takes writes", whose deque of waiters (~0.7 KiB) is
  almost always empty: a `Flag` keeps its waiters in a list made on demand.

`retrorun serve` runs this protocol (`ws=` in server/cli.py) and the room tests do too; the
rooms' direct writes (server/rooms/direct.py) rely on the same attributes as on uvicorn's own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


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


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with a lighter inbox and write flag, and no
    handshake kept."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # the handshake is over: its request and response are never read again
            self.request.headers.clear()
            self.response.headers.clear()
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]
