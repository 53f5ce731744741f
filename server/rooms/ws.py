"""`WS /ws/rooms/{room_id}`: sign in, join the room, relay frames both ways.

A room socket lives as long as a race (hours), so it is served beside FastAPI's routing, not
through it (`serve`, called by `server.app.RetroRunApp`): the router's middleware, exception and
dependency frames would otherwise be held for every socket (~13 KiB each, docs/benchmarks.md).

Origin is checked here (Starlette's CORS middleware does not cover WebSockets). The first frame
must be `auth {token}` within 5 s. Every later frame is size-checked, rate-limited and decoded;
a bad frame gets an `error` frame and the connection stays open. See docs/protocol.md.

A spotter (docs/protocol.md, "Spotters and safety alerts") signs in with their account's token
(the runners they spot come from their accepted pairings) or with `auth {share_token}`, a
runner's share link: that socket is the pseudonymous `link-<link id>` with the role `spotter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from server import accounts, metrics, spotters
from server.config import Settings
from server.rooms.backplane.base import Inbound, Outbound
from server.rooms.backplane.memory import NoOwner
from server.rooms.connection import Connection
from server.rooms.direct import protocol_of
from server.rooms.protocol import (
    MAX_FRAME_CHARS,
    AuthFrame,
    ClientFrame,
    FrameError,
    GpsFrame,
    PingFrame,
    decode,
    encode,
    error,
)
from server.rooms.registry import RoomRegistry
from server.rooms.room import Room, RoomNotFound
from server.security import InvalidToken, decode_token

PATH_PREFIX = "/ws/rooms/"

AUTH_TIMEOUT_S = 5.0
RATE_PER_S, RATE_BURST = 20.0, 40.0
#: GPS frames have their own, larger budget: after a reconnect a phone resends its whole backlog
#: of unacknowledged fixes at once (20 minutes at 1 Hz fit in the burst), and a refused fix could
#: never be applied later (the room applies fixes in seq order).
GPS_RATE_PER_S, GPS_BURST = 50.0, 1200.0
#: More refused (rate-limited) frames than this within the window closes the socket with 4429.
ABUSE_WINDOW_S, ABUSE_LIMIT = 5.0, 40
MAX_ROOM_ID = 64
SEND_BUFFER_BYTES = 32 * 1024
#: Close code for a share link that is unknown, revoked or expired (do not reconnect).
SHARE_LINK_INVALID = 4511
#: Close code for a share link whose runner is not in this room's race (reconnect later).
NOT_FOLLOWING = 4403
#: Close code for a socket over the per-account cap (close another one, then reconnect).
TOO_MANY = 4408
#: Close code when the room's owner is gone or moving (as a server restart: reconnect, resume).
ROOM_MOVING = 1012


#: What a room socket's scope holds as its state and extensions once open (read only before).
_EMPTY: Mapping[str, Any] = MappingProxyType({})
#: The scope's `asgi` version dicts, one shared by every socket that reports the same versions.
_ASGI: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}


@dataclass(frozen=True, slots=True)
class Who:
    """Who a socket signed in as: an account, or a share link (`link-<id>`, role `spotter`)."""

    id: str
    role: str
    #: Runners this identity spots (accepted pairings, or the share link's runner).
    spotting: tuple[str, ...] = ()
    share_link: str | None = None


class _Bucket:
    """Token bucket: `rate` frames a second, bursts of `burst`."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, time.monotonic()

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def room_id_of(path: str) -> str | None:
    """The room id of a room socket's path (`/ws/rooms/{room_id}`), or None for another path."""
    if not path.startswith(PATH_PREFIX):
        return None
    room_id = path[len(PATH_PREFIX) :]
    return room_id if room_id and "/" not in room_id else None


async def serve(scope: Scope, receive: Receive, send: Send, room_id: str) -> None:
    """A live room's socket, served straight from the ASGI server (a race's room id is its race
    id). Protocol: docs/protocol.md."""
    # the lifespan's state, read once: the server's copy of it for this socket is let go once
    # the socket is open (`_let_go_of_handshake`), as `websocket.state` would keep it
    state = scope["state"]
    settings: Settings = state["settings"]
    engine: AsyncEngine = state["engine"]
    rooms: RoomRegistry = state["rooms"]
    websocket = WebSocket(scope, receive, send)
    origin = _origin(scope)
    if origin is not None and settings.allowed_origins and origin not in settings.allowed_origins:
        metrics.WS_CLOSED.labels("1008").inc()
        await websocket.close(1008)  # before accept: the handshake is refused (403)
        return
    await websocket.accept()
    _let_go_of_handshake(scope)
    del state
    _limit_send_buffer(websocket)
    metrics.WS_CONNECTIONS.inc()
    try:
        who = await _authenticate(websocket, settings, engine)
        if who is None:
            return
        cap = settings.ws_max_sockets_per_account  # open sockets per account, in this process
        if rooms.sockets[who.id] >= cap:
            await _refuse_and_close(
                websocket,
                "too_many_sockets",
                f"at most {cap} open room sockets per account",
                TOO_MANY,
            )
            return
        rooms.sockets[who.id] += 1
        try:
            await _serve(websocket, room_id, who, rooms)
        finally:
            rooms.sockets[who.id] -= 1
            if rooms.sockets[who.id] <= 0:
                del rooms.sockets[who.id]
    finally:
        metrics.WS_CONNECTIONS.dec()


def _let_go_of_handshake(scope: Scope) -> None:
    """Once the socket is open, its scope keeps only what a log line reads (path, client): a
    socket that stays open for hours need not hold the request's headers (Origin was the only
    one the room reads; ~0.7 KiB), its own copy of the lifespan state (~0.5 KiB), an empty
    extensions dict, subprotocols list and `asgi` versions dict (~0.5 KiB; docs/decisions.md).
    Every key stays, with an empty or a shared value."""
    scope["headers"] = ()
    scope["state"] = _EMPTY
    scope["extensions"] = _EMPTY
    scope["subprotocols"] = ()
    asgi = scope.get("asgi")
    if isinstance(asgi, dict):
        scope["asgi"] = _ASGI.setdefault(tuple(asgi.items()), asgi)


def _origin(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"origin":
            return bytes(value).decode("latin-1")
    return None


def _limit_send_buffer(ws: WebSocket) -> None:
    """Keep the kernel's send buffer small, so a phone that stops reading is noticed in seconds
    (the per-connection queue and its lag check do the rest), not after megabytes. Best effort:
    only where the ASGI server exposes its transport (uvicorn does)."""
    proto = protocol_of(ws._send)
    transport = getattr(proto, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


async def _refuse_and_close(ws: WebSocket, code: str, message: str, close: int) -> None:
    metrics.WS_CLOSED.labels(str(close)).inc()
    with contextlib.suppress(Exception):
        await ws.send_text(error(code, message))
        await ws.close(close)


async def _authenticate(ws: WebSocket, settings: Settings, engine: AsyncEngine) -> Who | None:
    """Who the first frame's token (or share token) signs in, or None once the socket is closed."""
    try:
        msg = await asyncio.wait_for(ws.receive(), AUTH_TIMEOUT_S)
    except TimeoutError:
        await _refuse_and_close(ws, "auth_timeout", "send auth {token} within 5 s", 1008)
        return None
    if msg["type"] == "websocket.disconnect":
        return None
    text = msg.get("text")
    if text is None:
        await _refuse_and_close(ws, "binary_frame", "frames are JSON text", 1008)
        return None
    if len(text) > MAX_FRAME_CHARS:
        await _refuse_and_close(ws, "too_large", "frames are at most 16 KiB", 1009)
        return None
    try:
        frame = decode(text)
    except FrameError as exc:
        await _refuse_and_close(ws, exc.code, exc.message, 1008)
        return None
    if not isinstance(frame, AuthFrame):
        await _refuse_and_close(ws, "not_authenticated", "the first frame is auth {token}", 1008)
        return None
    if frame.share_token is not None:
        grant = await spotters.resolve_link(engine, frame.share_token, datetime.now(UTC))
        if grant is None:
            await _refuse_and_close(
                ws,
                "invalid_share_link",
                "this share link is unknown, revoked or expired",
                SHARE_LINK_INVALID,
            )
            return None
        return Who(grant.identity, "spotter", (grant.runner_id,), grant.link_id)
    assert frame.token is not None
    try:
        claims = decode_token(settings.secret_key, frame.token)
    except InvalidToken:
        await _refuse_and_close(ws, "invalid_token", "the token is invalid or expired", 4401)
        return None
    async with AsyncSession(engine, expire_on_commit=False) as session:
        runner = await accounts.runner_for_token(session, claims, datetime.now(UTC))
    if runner is None:
        await _refuse_and_close(ws, "invalid_token", "the token was revoked", 4401)
        return None
    if runner.banned:
        await _refuse_and_close(ws, "banned", "this account is banned", 4503)
        return None
    return Who(runner.id, runner.role, await spotters.spotted_by(engine, runner.id))


async def _serve(ws: WebSocket, room_id: str, who: Who, rooms: RoomRegistry) -> None:
    try:
        if len(room_id) > MAX_ROOM_ID:
            raise RoomNotFound(room_id)
        room = await rooms.get(room_id)
    except RoomNotFound:
        await _refuse_and_close(ws, "not_found", f"no room {room_id[:MAX_ROOM_ID]!r}", 4404)
        return
    if who.share_link is not None and not (  # share links follow a runner's races only
        isinstance(room, Room) and set(who.spotting) & set(room.state.registered)
    ):
        await _refuse_and_close(
            ws, "not_following", "this share link's runner is not in this race", NOT_FOLLOWING
        )
        return
    backplane = rooms.backplane
    conn = Connection(
        ws,
        who.id,
        who.role,
        moderator=who.share_link is None and room.is_controller(who.id, who.role),
        follows=who.spotting,
    )
    extra = {
        "moderator": conn.moderator,
        "spotting": list(who.spotting),
        "share_link": who.share_link,
    }
    backplane.subscribe(room_id, conn)
    # This task reads the socket itself (no reader task: thousands of sockets, each a task
    # fewer); when the room closes the socket first, it stops the read by cancelling this
    # task, and takes that cancellation back (as `asyncio.timeout` does).
    reader = _Reader(conn, extra)
    conn.done.add_done_callback(reader.stop_reading)
    receive = ws.receive
    try:
        await backplane.forward(
            room_id, Inbound(conn.conn_id, who.id, who.role, "join", extra=extra)
        )
        try:
            while True:
                message = reader.take(await receive())
                if message is not None:
                    await backplane.forward(room_id, message)
                    # the room has the frame now: nothing of it stays here while the socket
                    # waits for the next one (a runner's last gps text and model, ~1.5 KiB)
                    del message
        except NoOwner:
            raise
        except Exception:  # `_Stop` (the socket is closing), or it went away mid-read
            pass
    except NoOwner:  # the room has no owner right now (it is moving): reconnect and resume
        conn.close(ROOM_MOVING)
    except asyncio.CancelledError:
        if not reader.stopped or reader.task.uncancel() > 0:
            raise  # cancelled from outside (a shutdown), not by the room's close
    finally:
        reader.reading = False
        conn.done.remove_done_callback(reader.stop_reading)
        backplane.unsubscribe(room_id, conn)
        with contextlib.suppress(Exception):  # the room forgets the socket (spotter alerts)
            await backplane.forward(
                room_id, Inbound(conn.conn_id, who.id, who.role, "leave", extra=extra)
            )
        if not conn.close_code and ws.application_state == WebSocketState.CONNECTED:
            # the client left, or the room went away: nothing more to say
            conn.close(1000)
        await asyncio.shield(conn.done) if conn.close_code else None
        await conn.stop()


def _typed_gps(text: str) -> bool:
    """Whether a refused frame's `type` is "gps" all the same: a bad fix spends the GPS budget
    too (a phone resending its backlog may hold a few), anything else the general one. Parsed
    again only here, on the refusal path."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return isinstance(raw, dict) and raw.get("type") == "gps"


class _Stop(Exception):
    """The socket is closing: stop reading it."""


class _Reader:
    """One socket's incoming frames, read by its handler task: size, rate and schema checks,
    each refusal an `error` frame."""

    __slots__ = ("bucket", "conn", "extra", "gps_bucket", "reading", "refused", "stopped", "task")

    def __init__(self, conn: Connection, extra: dict[str, Any]) -> None:
        self.conn, self.extra = conn, extra
        self.bucket = _Bucket(RATE_PER_S, RATE_BURST)
        self.gps_bucket = _Bucket(GPS_RATE_PER_S, GPS_BURST)
        self.refused: list[float] = []  # when frames were refused, within the abuse window
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.reading = True
        self.stopped = False  # the room closed the socket: the read was cancelled for it

    def stop_reading(self, _: object) -> None:
        """`conn.done`'s callback: the room closed the socket, so the read stops."""
        if self.reading:
            self.stopped = True
            self.task.cancel()

    def refuse(self, code: str, message: str, ref: str | None) -> None:
        self.conn.deliver(Outbound("direct", error(code, message, ref)))

    def take(self, msg: Mapping[str, Any]) -> Inbound | None:
        """The frame for the room, or None (answered here: a pong, or an error frame)."""
        conn = self.conn
        if msg["type"] == "websocket.disconnect":
            raise _Stop
        now = time.monotonic()
        text: str | None = msg.get("text")
        size = len(text) if text is not None else len(msg.get("bytes") or b"")
        if size > MAX_FRAME_CHARS:
            self.refuse("too_large", "frames are at most 16 KiB", None)
            conn.close(1009, flush=True)
            raise _Stop
        # decoded before the rate check (once: the model is what the room gets), so the budget
        # is the one of the frame's own `type`: a frame that only names "gps" elsewhere (in its
        # `cid`, say) spends the general budget, as do binary frames
        frame: ClientFrame | None = None
        refusal: FrameError | None = None
        if text is not None:
            try:
                frame = decode(text)
            except FrameError as exc:
                refusal = exc
        gps = frame.__class__ is GpsFrame or (
            refusal is not None and text is not None and _typed_gps(text)
        )
        budget = self.gps_bucket if gps else self.bucket
        if not budget.take(now):
            refused = self.refused
            refused.append(now)
            while refused and refused[0] < now - ABUSE_WINDOW_S:
                del refused[0]
            if len(refused) > ABUSE_LIMIT:
                conn.close(4429, flush=True)
                raise _Stop
            self.refuse("rate_limited", f"at most {RATE_PER_S:g} frames a second", None)
            return None
        if refusal is not None:
            self.refuse(refusal.code, refusal.message, refusal.ref)
            return None
        if frame is None:
            self.refuse("binary_frame", "frames are JSON text", None)
            return None
        if isinstance(frame, PingFrame):
            pong: dict[str, Any] = {"type": "pong", "t0": frame.t0, "t1": round(time.time(), 6)}
            if frame.cid is not None:
                pong["cid"] = frame.cid
            conn.deliver(Outbound("pong", encode(pong)[:-1]))
            return None
        if isinstance(frame, AuthFrame):
            self.refuse("already_authenticated", "this socket is signed in", frame.cid or "auth")
            return None
        return Inbound(
            conn.conn_id, conn.runner_id, conn.role, "frame", frame, time.time(), self.extra
        )
