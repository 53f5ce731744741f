"""A typed async SDK for RetroRun: the REST API (httpx) and live rooms (websockets).

It speaks only the public contract (docs/api.md, docs/protocol.md) and never imports `server`.
Usage, with an example per role, is in docs/sdk.md.

    async with RetroRunClient("http://127.0.0.1:8000") as api:
        await api.login("demo", "backwards!")
        async with api.room(race_id) as room:
            await room.send_gps({"t": room.server_now(), "lat": 52.5, "lon": 13.4, "acc": 5.0})
            async for frame in room:
                ...

REST errors (RFC 9457 problem documents) raise `ApiError(status, code, detail)`. A room keeps
itself connected for the life of the room: after a lost connection it reconnects with capped
exponential backoff and full jitter (no limit unless `reconnect_for_s` / `max_reconnects` set
one), resumes the broadcast stream after the last `seq` it saw, drops the GPS fixes the server
says it stored (`welcome.acked_seq`) and resends the rest in order. A connection that delivers
no frame for `liveness_timeout_s` is treated as dead and replaced. It stops at once on the close
codes that forbid coming back (`should_reconnect`): the room is over (4504), banned (4503), a
revoked share link (4511), any 4500-4999, a policy violation (1008) or an oversized frame (1009).

Modules: `rest` (RetroRunClient); `room` (RoomConnection), built on `link` (the socket,
reconnects), `frames` (dispatch, resume) and `room_state`; `clock` (ClockSync); `protocol`
(close codes, frame kinds); `models` (REST shapes); `errors`.
"""

from __future__ import annotations

from clients.sdk.clock import ClockSample, ClockSync
from clients.sdk.errors import (
    ApiError,
    FrameRefused,
    RoomClosed,
    RoomError,
    RoomRefused,
    RoomUnavailable,
)
from clients.sdk.models import (
    JSON,
    BoardEntry,
    BoardPage,
    Challenge,
    DrillPhase,
    DrillPublic,
    Flag,
    Pairing,
    Pairings,
    Progress,
    ResultRow,
    RunnerPublic,
    RunPublic,
    ShareLink,
    Watch,
    WatchRace,
)
from clients.sdk.protocol import (
    ALERT_FRAMES,
    BROADCASTS,
    DRILL_ACTIONS,
    FLOODING,
    GPS_FIELDS,
    RACE_ACTIONS,
    RECONNECT_CODES,
    ROOM_OVER,
    TERMINAL_CODES,
    TOKEN_REJECTED,
    Frame,
    should_reconnect,
)
from clients.sdk.rest import API, RetroRunClient
from clients.sdk.room import RoomConnection
from clients.sdk.room_state import TokenSource

__all__ = [
    "ALERT_FRAMES",
    "API",
    "BROADCASTS",
    "DRILL_ACTIONS",
    "FLOODING",
    "GPS_FIELDS",
    "JSON",
    "RACE_ACTIONS",
    "RECONNECT_CODES",
    "ROOM_OVER",
    "TERMINAL_CODES",
    "TOKEN_REJECTED",
    "ApiError",
    "BoardEntry",
    "BoardPage",
    "Challenge",
    "ClockSample",
    "ClockSync",
    "DrillPhase",
    "DrillPublic",
    "Flag",
    "Frame",
    "FrameRefused",
    "Pairing",
    "Pairings",
    "Progress",
    "ResultRow",
    "RetroRunClient",
    "RoomClosed",
    "RoomConnection",
    "RoomError",
    "RoomRefused",
    "RoomUnavailable",
    "RunPublic",
    "RunnerPublic",
    "ShareLink",
    "TokenSource",
    "Watch",
    "WatchRace",
    "should_reconnect",
]
