"""A small asyncio TCP fault proxy for loopback tests.

Forwards bytes between a local port and an upstream (host, port). On command it can
`pause()` (blackhole: stop moving bytes both ways; the sockets stay open and the data waits in
the kernel buffers, as on a stalled network), `resume()`, `cut()` (abort every connection,
as a dropped network would: the peers see a reset / close code 1006) and `refuse(True)`
(accept new connections and abort them at once, until `refuse(False)`).
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.refused = 0
        self.cuts = 0

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    # commands

    def pause(self) -> None:
        """Blackhole: no byte moves in either direction until `resume()`."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def refuse(self, on: bool = True) -> None:
        """New connections are aborted at once while on."""
        self._refusing = on

    def cut(self) -> int:
        """Abort every open connection (both sides); returns how many."""
        pairs, self._pairs = list(self._pairs), set()
        for down, up in pairs:
            for w in (down, up):
                with contextlib.suppress(Exception):
                    w.transport.abort()
        self.cuts += len(pairs)
        return len(pairs)

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    # plumbing

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        t1 = asyncio.create_task(self._pump(reader, up_writer, pair))
        t2 = asyncio.create_task(self._pump(up_reader, writer, pair))
        for t in (t1, t2):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # bytes read just before a pause wait with the rest
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._pairs.discard(pair)
            for w in pair:
                with contextlib.suppress(Exception):
                    w.transport.abort() if w.transport.is_closing() else w.close()
