"""The SDK's exceptions: REST problem documents (`ApiError`) and room failures (`RoomError`)."""

from __future__ import annotations

from clients.sdk.models import JSON
from clients.sdk.protocol import Frame


class ApiError(Exception):
    """A problem document (or any non-2xx answer) from the REST API."""

    def __init__(self, status: int, code: str, detail: str, body: JSON | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body: JSON = body or {}


class RoomError(Exception):
    """Something went wrong in a room: a refused frame, or the room could not be reached."""


class RoomClosed(RoomError):
    """The server closed the room connection with a code that forbids reconnecting (4500-4999,
    or a protocol error such as 1009): the client must not come back on its own."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"room closed with code {code}: {reason or 'no reason given'}")
        self.code = code
        self.reason = reason


class RoomUnavailable(RoomError):
    """Reconnecting failed for longer than `reconnect_for_s`, or `max_reconnects` times in a row."""


class RoomRefused(RoomError):
    """The WebSocket handshake was refused with an HTTP status (no such route, forbidden)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the room handshake was refused: HTTP {status}")
        self.status = status


class _NotConnected(RoomError):
    pass


class FrameRefused(RoomError):
    """The server answered a frame we sent with an `error` frame."""

    def __init__(self, frame: Frame) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.code = str(frame.get("code", ""))
        self.message = str(frame.get("message", ""))
        self.ref = frame.get("ref")
