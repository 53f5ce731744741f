"""The room contract as the SDK reads it (docs/protocol.md): close codes and what they allow,
the frame kinds it treats specially, and the `Frame` type."""

from __future__ import annotations

from typing import Any

Frame = dict[str, Any]

#: Close codes after which a client reconnects (then resumes); see docs/protocol.md. Besides
#: these, every code in 4000-4499 invites the client back. 1001 (going away) is included: a
#: server process that stops hands its rooms to another; 1012 is a restart or a room moving to
#: another process, 1013 a slow consumer (both: reconnect, then resume).
RECONNECT_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
#: Close codes that end the room connection for good: normal closure, a policy violation
#: (1008: no or bad `auth`, an Origin refused), an oversized frame (1009). With 4500-4999
#: (room over 4504, banned 4503, share link revoked 4511) and any other code not listed in
#: `RECONNECT_CODES`, reconnecting cannot help: the same client would be refused again.
TERMINAL_CODES = frozenset({1000, 1008, 1009})
#: The race or drill is over (closed, aborted, results published): never reconnect.
ROOM_OVER = 4504
#: A bad, expired or revoked token: reconnect only with a new one.
TOKEN_REJECTED = 4401
#: Sustained flooding: reconnecting may help, but slowly.
FLOODING = 4429
#: Fields a `gps` frame may carry besides `type`, `seq` and `cid` (unknown fields are refused).
GPS_FIELDS = frozenset(
    {"t", "lat", "lon", "acc", "heading", "speed", "course", "cadence", "mock", "echo"}
)
#: Broadcast frame types: they carry the room `seq` and `epoch`.
BROADCASTS = frozenset({"countdown", "standings", "event"})
#: Control actions of each room kind (docs/protocol.md, `control`).
RACE_ACTIONS = frozenset({"start", "pause", "resume", "abort", "disqualify", "close"})
DRILL_ACTIONS = frozenset({"start", "close"})
#: Direct safety frames (docs/protocol.md, "Spotters and safety alerts").
ALERT_FRAMES = frozenset({"alert", "alert_escalated", "alert_cancelled", "alert_acked"})


def should_reconnect(code: int) -> bool:
    """Whether a close code invites the client back (docs/protocol.md, "Close codes"): the
    codes in `RECONNECT_CODES` and 4000-4499; never `TERMINAL_CODES` nor 4500-4999."""
    if code in TERMINAL_CODES or 4500 <= code <= 4999:
        return False
    return code in RECONNECT_CODES or 4000 <= code <= 4499


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
