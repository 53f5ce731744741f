"""A deadline and a size cap for HTTP request heads (slowloris), on uvicorn's httptools protocol.

uvicorn bounds the idle time between keep-alive requests (`timeout_keep_alive`) but not the time
a client takes to send a request line and its headers: a client trickling one header byte every
few seconds holds its connection (and a descriptor) for as long as it likes, and so do many.
`guarded_http_protocol` returns uvicorn's httptools protocol with two more rules:

- the head (request line and headers) must be complete `header_timeout_s` after the connection
  opened, or after the first byte of a later request on a kept-alive connection; otherwise the
  connection is closed. The idle time between requests stays `timeout_keep_alive`'s.
- a head may be at most `max_head_bytes` long, else `431` and close (uvicorn's own cap,
  `h11_max_incomplete_event_size`, applies to its h11 parser only).

Once the head is in, the deadline is off: the body and the application take their own time,
and a WebSocket upgrade hands the socket to the WebSocket protocol (which has its own pings).
`server/cli.py` pins this protocol (`http=`), so the choice no longer depends on whether
httptools happens to be installed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 31\r\n"
    b"connection: close\r\n\r\n"
    b"Request header fields too large"
)


class HeadGuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head deadline and size cap."""

    header_timeout_s: float = 10.0
    max_head_bytes: int = 16 * 1024
    #: After a 431, the longest the connection stays half-open, dropping what the client sends.
    LINGER_S = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = False
        self._head_bytes = 0
        self._refused = False  # a 431 went out: lingering until the close

    # the head's window: opened on connect and at each request's first byte, shut when the
    # parser has the headers (or the connection is gone)

    def _open_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _shut_head(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            log.info(
                "closing a connection from %s: no complete request head within %g s",
                self.client[0] if self.client else "?",
                self.header_timeout_s,
            )
            self.transport.close()

    # uvicorn's hooks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._open_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._shut_head()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a 431: what the client still sends is dropped
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes:
            if not self.transport.is_closing():
                self._refuse_head()
            self._shut_head()

    def _refuse_head(self) -> None:
        """431, then a lingering close: closing at once while the client is still sending its
        head makes the kernel answer with a reset, which may discard the 431 before the client
        reads it. So: send the 431 and end our side (EOF), drop what still arrives, and close
        when the client does, or after `LINGER_S`."""
        self._refused = True
        self.transport.write(_HEAD_TOO_LARGE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(self.LINGER_S, self.transport.close)
        else:  # pragma: no cover - TLS transports cannot half-close
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # a later request on a kept-alive connection (this read's bytes
            self._open_head()  # are not counted: the cap may be passed by one read, not more)

    def on_headers_complete(self) -> None:
        self._shut_head()
        super().on_headers_complete()


def guarded_http_protocol(header_timeout_s: float, max_head_bytes: int) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn as `http=`, with these limits."""
    return type(
        "HeadGuardedProtocol",
        (HeadGuardedProtocol,),
        {"header_timeout_s": header_timeout_s, "max_head_bytes": max_head_bytes},
    )
