"""Synchronous sends to a WebSocket, for the room fan-out's common case.

Through ASGI, every frame to every socket is a coroutine chain (Starlette's `WebSocket.send`,
its exception wrapper, the server's `send`), and a room that sends one standings frame to 2,000
sockets four times a second spends most of its time there and in waking one sender task per
socket. Yet a frame to a socket whose transport is not paused never waits: it is framed and
handed to the kernel at once. `DirectWriter` does exactly that, synchronously, when the server
behind the socket is uvicorn's `websockets-sansio` protocol (the one `retrorun serve` runs) and
the transport takes writes; otherwise `send` returns False and the caller takes the ASGI path,
which waits for the transport to drain. Nothing is ever sent twice or skipped: a frame goes one
way or the other.

Server-to-client frames are not masked and `retrorun serve` negotiates no extension
(`ws_per_message_deflate=False`), so a frame's bytes depend only on its text: the last text framed
is cached, so a frame shared by every socket (an event, an alert) is framed once for all of them.
A standings frame is spliced per socket (`Connection._text`), so each socket's is framed anew.
"""

from __future__ import annotations

import contextlib
import struct
from typing import Any

from websockets.exceptions import InvalidState
from websockets.frames import Opcode
from websockets.protocol import State

_FIN_TEXT = 0x80 | Opcode.TEXT
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")

#: The attributes of uvicorn's `WebSocketsSansIOProtocol` this relies on (checked once).
_NEEDS = ("conn", "transport", "writable", "close_sent", "disconnected")


class _LastFrame:
    """The bytes of the last text framed: a fan-out frames each shared text once."""

    text: str | None = None
    data = b""


def frame_bytes(text: str) -> bytes:
    """A complete unmasked text frame without extensions (the last one is cached): FIN and
    the text opcode, then the payload length in 7, 7+16 or 7+64 bits (RFC 6455, 5.2), the
    bytes `websockets.frames.Frame.serialize` writes at a quarter of its cost."""
    if text is not _LastFrame.text:
        data = text.encode()
        n = len(data)
        if n < 126:
            head = bytes((_FIN_TEXT, n))
        elif n < 65536:
            head = _HEAD16.pack(_FIN_TEXT, 126, n)
        else:
            head = _HEAD64.pack(_FIN_TEXT, 127, n)
        _LastFrame.data = head + data
        _LastFrame.text = text
    return _LastFrame.data


class DirectWriter:
    """Writes text frames straight to the transport of one socket, while it takes them."""

    __slots__ = ("_conn", "_proto")

    def __init__(self, proto: Any) -> None:
        self._proto = proto
        self._conn = proto.conn

    @classmethod
    def of(cls, send: Any) -> DirectWriter | None:
        """A writer for the uvicorn protocol behind an ASGI `send`, or None (other servers,
        or a negotiated extension such as compression: then every frame goes through ASGI)."""
        proto = protocol_of(send)
        if proto is None or not all(hasattr(proto, a) for a in _NEEDS):
            return None
        conn = proto.conn
        if getattr(conn, "extensions", None) or not hasattr(conn, "state"):
            return None
        return cls(proto)

    def send(self, text: str) -> bool:
        """Write `text` now; False (nothing written) when the transport is paused or closing,
        or the socket is no longer open."""
        p = self._proto
        if p.close_sent or p.disconnected or not p.writable.is_set():
            return False
        transport = p.transport
        if transport.is_closing() or self._conn.state is not State.OPEN:
            return False
        try:
            transport.write(frame_bytes(text))
        except (InvalidState, RuntimeError, OSError):  # pragma: no cover - a dying transport
            return False
        return True


def protocol_of(send: Any, depth: int = 0) -> Any:
    """The server protocol object behind an ASGI `send` (middlewares wrap it in closures)."""
    owner = getattr(send, "__self__", None)
    if owner is not None and hasattr(owner, "transport"):
        return owner
    if depth > 6:
        return None
    for cell in getattr(send, "__closure__", None) or ():
        with contextlib.suppress(ValueError):
            if callable(cell.cell_contents):
                found = protocol_of(cell.cell_contents, depth + 1)
                if found is not None:
                    return found
    return None
