"""A typed async SDK for RetroRun: the REST API (httpx) and live rooms (websockets).

It speaks only the public contract (docs/api.md, docs/protocol.md) and never imports `server`.

    async with RetroRunClient("http://127.0.0.1:8000") as api:
        await api.login("demo", "backwards!")
        race = await api.race(race_id)
        async with api.room(race_id) as room:
            await room.send_gps({"t": room.server_now(), "lat": 52.5, "lon": 13.4, "acc": 5.0})
            async for frame in room:
                ...

REST errors (RFC 9457 problem documents) raise `ApiError(status, code, detail)`. A room
reconnects by itself (exponential backoff with full jitter) on close codes 1006, 1008, 1011,
1012, 1013 and 4000-4499, resumes the broadcast stream after the last `seq` it saw and resends
every GPS fix the server has not acknowledged; it never reconnects on 4500-4999 (`RoomClosed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypedDict, cast
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

log = logging.getLogger(__name__)

JSON = dict[str, Any]
Frame = dict[str, Any]
TokenSource = str | Callable[[], Awaitable[str]]

API = "/api/v1"

#: Close codes after which a client reconnects (then resumes); see docs/protocol.md.
#: 1001 (going away) is included: a server process that stops hands its rooms to another.
RECONNECT_CODES = frozenset({1001, 1006, 1008, 1011, 1012, 1013})
#: Fields a `gps` frame may carry besides `type`, `seq` and `cid` (unknown fields are refused).
GPS_FIELDS = frozenset({"t", "lat", "lon", "acc", "heading", "speed", "course", "cadence", "mock"})
#: Broadcast frame types: they carry the room `seq` and `epoch`.
BROADCASTS = frozenset({"countdown", "standings", "event"})


# Errors


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
    """Reconnecting failed `max_reconnects` times in a row."""


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


def should_reconnect(code: int) -> bool:
    """Whether a close code invites the client back (docs/protocol.md, "Close codes")."""
    return code in RECONNECT_CODES or 4000 <= code <= 4499


# REST shapes (the fields the SDK relies on; the server may add more)


class RunnerPublic(TypedDict):
    id: str
    handle: str
    role: str
    created_at: str


class Flag(TypedDict):
    code: str
    message: str
    points: int
    hard_fail: bool
    evidence: dict[str, Any]


class RunPublic(TypedDict):
    id: str
    runner_id: str
    activity: str
    status: Literal["verified", "review", "rejected"]
    distance_m: float
    duration_s: float
    moving_s: float
    credited_distance_m: float
    started_at: str | None
    ended_at: str | None
    score: int
    flags: list[Flag]
    best_efforts_s: dict[str, float]
    fix_count: int
    appealed: bool


class Challenge(TypedDict):
    id: str
    title: str
    kind: str
    target_value: float
    distance_m: float | None
    starts_at: str
    ends_at: str
    status: str
    members: int


class Progress(TypedDict):
    challenge_id: str
    runner_id: str
    joined: bool
    value: float | None
    target_value: float
    percent: float
    runs: int
    completed: bool
    rank: int | None
    of: int


class BoardEntry(TypedDict):
    rank: int
    runner_id: str
    handle: str | None
    score: float


class BoardPage(TypedDict):
    board: str
    total: int
    limit: int
    offset: int
    entries: list[BoardEntry]


# REST client


class RetroRunClient:
    """The REST API over one `httpx.AsyncClient`; `room()` opens a live room connection."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._credentials: tuple[str, str] | None = None
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # plumbing

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if extra:
            headers.update(extra)
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        response = await self._http.request(
            method,
            path,
            json=json_body,
            data=data,
            params=params,
            headers=self._headers(headers),
        )
        if response.status_code >= 400:
            raise _api_error(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # accounts

    async def register(self, handle: str, password: str) -> RunnerPublic:
        """Create a runner account (201)."""
        body = {"handle": handle, "password": password}
        return cast(
            RunnerPublic, await self._request("POST", f"{API}/auth/register", json_body=body)
        )

    async def login(self, handle: str, password: str) -> str:
        """Sign in (OAuth2 password form); keeps and returns the bearer token."""
        answer = await self._request(
            "POST", f"{API}/auth/token", data={"username": handle, "password": password}
        )
        self.token = str(answer["access_token"])
        self._credentials = (handle, password)
        return self.token

    async def me(self) -> RunnerPublic:
        return cast(RunnerPublic, await self._request("GET", f"{API}/me"))

    # challenges

    async def challenges(
        self,
        state: Literal["current", "all", "closed"] = "current",
        limit: int = 20,
        offset: int = 0,
    ) -> list[Challenge]:
        params: dict[str, str | int] = {"state": state, "limit": limit, "offset": offset}
        return cast(list[Challenge], await self._request("GET", f"{API}/challenges", params=params))

    async def current_challenge(self) -> Challenge:
        """This week's official challenge."""
        return cast(Challenge, await self._request("GET", f"{API}/challenges/current"))

    async def join_challenge(self, challenge_id: str) -> Progress:
        path = f"{API}/challenges/{_seg(challenge_id)}/join"
        return cast(Progress, await self._request("POST", path))

    async def progress(self, challenge_id: str) -> Progress:
        path = f"{API}/challenges/{_seg(challenge_id)}/progress"
        return cast(Progress, await self._request("GET", path))

    # runs

    async def submit_run(
        self,
        points: list[Mapping[str, Any]],
        activity: str = "backward_run",
        checklist: Mapping[str, bool] | None = None,
        idempotency_key: str | None = None,
    ) -> RunPublic:
        """Upload a run as JSON fixes; send an `idempotency_key` to make retries safe."""
        body = {"activity": activity, "points": list(points), "checklist": dict(checklist or {})}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = await self._request("POST", f"{API}/runs", json_body=body, headers=headers)
        return cast(RunPublic, answer)

    async def run(self, run_id: str) -> RunPublic:
        return cast(RunPublic, await self._request("GET", f"{API}/runs/{_seg(run_id)}"))

    # leaderboards

    async def leaderboard(self, board: str, limit: int = 100, offset: int = 0) -> BoardPage:
        """A page of a board: `xp:all`, `weekly:2026-W48`, `challenge:<id>`, `club:<id>`."""
        params: dict[str, str | int] = {"limit": limit, "offset": offset}
        path = f"{API}/leaderboards/{_seg(board)}"
        return cast(BoardPage, await self._request("GET", path, params=params))

    async def around(self, board: str, user_id: str, radius: int = 5) -> BoardPage:
        path = f"{API}/leaderboards/{_seg(board)}/around/{_seg(user_id)}"
        return cast(BoardPage, await self._request("GET", path, params={"radius": radius}))

    # races

    async def create_race(
        self,
        title: str,
        distance_m: float,
        scheduled_at: datetime,
        capacity: int = 100,
        open: bool = True,
    ) -> JSON:
        """Schedule a race (moderators and organisers). `scheduled_at` must be time-zone aware."""
        if scheduled_at.tzinfo is None:
            raise ValueError("scheduled_at needs a time zone (the API refuses naive times)")
        body = {
            "title": title,
            "distance_m": distance_m,
            "scheduled_at": scheduled_at.isoformat(),
            "capacity": capacity,
            "open": open,
        }
        return cast(JSON, await self._request("POST", f"{API}/races", json_body=body))

    async def register_for_race(self, race_id: str) -> JSON:
        return cast(JSON, await self._request("POST", f"{API}/races/{_seg(race_id)}/register"))

    async def race(self, race_id: str) -> JSON:
        return cast(JSON, await self._request("GET", f"{API}/races/{_seg(race_id)}"))

    async def race_results(self, race_id: str) -> JSON:
        return cast(JSON, await self._request("GET", f"{API}/races/{_seg(race_id)}/results"))

    # rooms

    @property
    def ws_base(self) -> str:
        if self.base_url.startswith("https://"):
            return "wss://" + self.base_url.removeprefix("https://")
        return "ws://" + self.base_url.removeprefix("http://")

    def room(self, room_id: str, **options: Any) -> RoomConnection:
        """A connection to `WS /ws/rooms/{room_id}` authenticated with this client's token.

        After a 4401 close (bad or expired token) the connection signs in again before it
        reconnects, when this client signed in with `login`.
        """
        conn: RoomConnection

        async def token() -> str:
            if conn.close_code == 4401 and self._credentials is not None:
                await self.login(*self._credentials)
            if self.token is None:
                raise RoomError("sign in first: a room needs a bearer token")
            return self.token

        conn = RoomConnection(f"{self.ws_base}/ws/rooms/{_seg(room_id)}", token, **options)
        return conn


def _seg(value: str) -> str:
    return quote(value, safe=":")


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return ApiError(
            int(body.get("status", response.status_code)),
            str(body.get("code", "error")),
            str(body.get("detail", response.reason_phrase)),
            body,
        )
    return ApiError(response.status_code, "error", response.text[:500] or response.reason_phrase)


# Rooms


@dataclass(slots=True)
class ClockSample:
    offset_s: float  # server clock - local clock
    rtt_s: float


class ClockSync:
    """NTP-style offset from `ping`/`pong`, smoothed: samples with a round trip far above the
    best seen are ignored; the rest move the offset by an exponential average."""

    def __init__(self, alpha: float = 0.3, window: int = 16) -> None:
        self.alpha = alpha
        self.offset_s: float | None = None
        self.rtt_s: float | None = None
        self.samples: list[ClockSample] = []
        self._window = window

    def add(self, t0: float, t1: float, t2: float, t3: float) -> ClockSample:
        sample = ClockSample(((t1 - t0) + (t2 - t3)) / 2.0, max(0.0, (t3 - t0) - (t2 - t1)))
        self.samples = [*self.samples[-(self._window - 1) :], sample]
        best = min(s.rtt_s for s in self.samples)
        if self.offset_s is None:
            self.offset_s, self.rtt_s = sample.offset_s, sample.rtt_s
        elif sample.rtt_s <= 2.0 * best + 0.005:
            self.offset_s += self.alpha * (sample.offset_s - self.offset_s)
            self.rtt_s = sample.rtt_s
        return sample

    def rough(self, server_time: float, local_time: float) -> None:
        """A first guess from `welcome.server_time`, until a pong arrives."""
        if self.offset_s is None:
            self.offset_s = server_time - local_time


_END = object()


class RoomConnection:
    """One client of a live room, kept alive across network failures.

    Use `async with` (or `await connect()` ... `await close()`); iterate for incoming frames
    (dicts): `welcome` (first, and again whenever the server sent a fresh snapshot), `countdown`,
    `standings`, `event`, `error` and unknown types; `pong` and `ack` are consumed here (pass
    `deliver_acks=True` to see acks). Broadcasts are delivered in `seq` order, once each: a gap
    asks the server to `resume`, a duplicate is dropped.
    """

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        sync_samples: int = 5,
        ping_interval_s: float = 10.0,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 8.0,
        max_reconnects: int = 8,
        open_timeout_s: float = 10.0,
        max_unacked: int = 20_000,
        queue_size: int = 2_000,
        gps_seq_start: int = 1,
        deliver_acks: bool = False,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self._token = token
        self.sync_samples = sync_samples
        self.ping_interval_s = ping_interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.max_reconnects = max_reconnects
        self.open_timeout_s = open_timeout_s
        self.max_unacked = max_unacked
        self.deliver_acks = deliver_acks
        self._clock = clock
        self._rng = rng or random.Random()
        self.clock = ClockSync()

        # room state
        self.seq: int | None = None  # last broadcast seq delivered
        self.epoch: str | None = None
        self.welcome: Frame | None = None
        self.role: str | None = None
        self.you: str | None = None

        # GPS: numbered per runner; kept until acknowledged
        self._next_gps_seq = gps_seq_start
        self.unacked: OrderedDict[int, Frame] = OrderedDict()
        self.acked_count = 0

        # bookkeeping, public for tests and dashboards
        self.connects = 0
        self.reconnects = 0
        self.resumes_sent = 0
        self.gaps_seen = 0
        self.dropped_frames = 0
        self.close_code: int | None = None

        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._frames: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue_size)
        self._waiters: list[tuple[Callable[[Frame], bool], asyncio.Future[Frame]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._dropped_since_resume = 0
        self._failure: BaseException | None = None
        self._resume_pending_until: int | None = None  # seq we asked to resume after
        self._cids = itertools.count(1)

    # lifecycle

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> Frame:
        """Connect, authenticate, take the `welcome`, and sync the clock. Returns the welcome.

        The first connection is one attempt: a close during the handshake raises `RoomClosed`
        (its `code` says whether coming back later may help), an HTTP refusal `RoomRefused`.
        """
        try:
            ws, welcome = await self._open()
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            raise RoomClosed(rcvd.code if rcvd else 1006, rcvd.reason if rcvd else "") from exc
        except InvalidStatus as exc:
            raise RoomRefused(exc.response.status_code) from exc
        self._adopt(welcome)
        self._put(welcome)
        self._attach(ws)
        self._tasks = [
            asyncio.create_task(self._supervise(), name="room-reader"),
            asyncio.create_task(self._pinger(), name="room-pinger"),
        ]
        if self.sync_samples:
            await self.sync_clock(self.sync_samples)
        return welcome

    async def close(self, code: int = 1000) -> None:
        """Close the connection (normal closure) and stop the background tasks."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code), 5.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._finish(None)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def abort_transport(self) -> None:
        """Drop the socket without a closing handshake, as a network failure would (close code
        1006 on this side). The connection then reconnects and resumes by itself."""
        if self._ws is not None:
            self._ws.transport.abort()

    # time

    def server_now(self) -> float:
        """The server's clock (Unix seconds), from the smoothed clock-sync offset."""
        return self._clock() + (self.clock.offset_s or 0.0)

    @property
    def offset_s(self) -> float | None:
        return self.clock.offset_s

    async def sync_clock(self, samples: int = 5, timeout_s: float = 5.0) -> float | None:
        """Exchange `samples` ping/pong pairs one after another; returns the smoothed offset."""
        for _ in range(max(0, samples)):
            t0 = self._clock()
            cid = f"p{next(self._cids)}"
            waiter = self._wait(functools.partial(_is_pong, t0=t0, cid=cid))
            try:
                await self._send({"type": "ping", "t0": t0, "cid": cid})
                await asyncio.wait_for(waiter, timeout_s)
            except (TimeoutError, ConnectionClosed, RoomError):
                self._drop_waiter(waiter)
                break
        return self.clock.offset_s

    # sending

    async def send_gps(self, fix: Mapping[str, Any]) -> int:
        """Send one fix (`t` in server time, `lat`, `lon`, optional `acc`, `heading`, `speed`,
        `course`, `cadence`, `mock`); returns its per-runner `seq`. The fix is kept until the
        server acknowledges it and resent after a reconnect. While disconnected it is queued."""
        self._raise_if_failed()
        unknown = set(fix) - GPS_FIELDS
        if unknown:
            raise ValueError(f"gps frames carry no {sorted(unknown)} (see docs/protocol.md)")
        if len(self.unacked) >= self.max_unacked:
            raise RoomError(f"{len(self.unacked)} fixes wait for an ack: the server is not acking")
        seq = self._next_gps_seq
        self._next_gps_seq += 1
        frame: Frame = {"type": "gps", "seq": seq, **fix}
        self.unacked[seq] = frame
        if self.connected:
            with contextlib.suppress(ConnectionClosed, _NotConnected):  # resent on reconnect
                await self._send(frame)
        return seq

    async def ready(self) -> None:
        """Tell the organiser this runner is at the start line."""
        await self._send({"type": "ready"})

    async def control(
        self, action: str, *, timeout_s: float | None = None, **fields: Any
    ) -> Frame | None:
        """A moderator's `control` frame (`start` {countdown_s}, `pause`, `resume`, `abort`
        {reason}, `disqualify` {runner_id, reason}, `close`).

        With `timeout_s`, waits for the outcome: the first broadcast (`countdown` or `event`)
        is returned, an `error` that refers to this frame raises `FrameRefused`, and nothing
        within the time returns None. Without it, returns at once (errors arrive as frames).
        """
        self._raise_if_failed()
        cid = f"c{next(self._cids)}"
        waiter = None
        if timeout_s is not None:
            waiter = self._wait(lambda f: _answers_control(f, cid))
        await self._send({"type": "control", "action": action, "cid": cid, **fields})
        if waiter is None:
            return None
        try:
            frame = await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            self._drop_waiter(waiter)
            return None
        if frame.get("type") == "error":
            raise FrameRefused(frame)
        return frame

    async def resume(self) -> None:
        """Ask for the broadcasts after the last one seen (done automatically on a gap)."""
        if self.seq is None:
            return
        await self._send(self._resume_frame())

    def _resume_frame(self) -> Frame:
        self._resume_pending_until = self.seq
        self._dropped_since_resume = 0
        self.resumes_sent += 1
        frame: Frame = {"type": "resume", "after_seq": self.seq}
        if self.epoch is not None:
            frame["epoch"] = self.epoch
        return frame

    async def wait_for(self, predicate: Callable[[Frame], bool], timeout_s: float) -> Frame:
        """The next incoming frame (any type, pongs and acks included) matching `predicate`."""
        waiter = self._wait(predicate)
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        finally:
            self._drop_waiter(waiter)

    # receiving

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self

    async def __anext__(self) -> Frame:
        item = await self._frames.get()
        if item is _END:
            self._frames.put_nowait(_END)  # later readers end too
            if self._failure is not None:
                raise self._failure
            raise StopAsyncIteration
        return cast(Frame, item)

    async def recv(self, timeout_s: float | None = None) -> Frame:
        """The next delivered frame; raises StopAsyncIteration once the room connection ended."""
        return await asyncio.wait_for(self.__anext__(), timeout_s)

    # internals: connection

    async def _token_value(self) -> str:
        token = self._token
        return token if isinstance(token, str) else await token()

    async def _open(self) -> tuple[ClientConnection, Frame]:
        """One attempt: open the socket, send `auth`, read until `welcome`."""
        token = await self._token_value()
        ws = await connect(
            self.url, open_timeout=self.open_timeout_s, max_size=2**22, close_timeout=5
        )
        try:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            async with asyncio.timeout(self.open_timeout_s):
                for _ in range(1000):  # bounded: the welcome is the first answer to auth
                    frame = _decode(await ws.recv())
                    if frame is None:
                        continue
                    if frame.get("type") == "welcome":
                        self.connects += 1
                        return ws, frame
                    if frame.get("type") == "error":
                        log.warning("room refused auth: %s", frame)
                raise RoomError("no welcome after auth")
        except BaseException:
            await ws.close()
            raise

    def _attach(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._connected.set()

    def _adopt(self, welcome: Frame) -> None:
        """A welcome is a new baseline: snapshot, `seq` and `epoch`."""
        self.welcome = welcome
        self.seq = _int_or_none(welcome.get("seq"))
        self.epoch = None if welcome.get("epoch") is None else str(welcome.get("epoch"))
        self.role = welcome.get("role")
        self.you = welcome.get("you")
        self._resume_pending_until = None
        if isinstance(welcome.get("server_time"), int | float):
            self.clock.rough(float(welcome["server_time"]), self._clock())

    async def _supervise(self) -> None:
        """Read frames; on a close decide: stop, fail, or reconnect with backoff and resume."""
        try:
            while not self._closing:
                ws = self._ws
                assert ws is not None
                code, reason = await self._read_until_closed(ws)
                self._connected.clear()
                self.close_code = code
                if self._closing or code == 1000:
                    self._finish(None)
                    return
                if not should_reconnect(code):
                    self._finish(RoomClosed(code, reason))
                    return
                log.info("room connection lost (%s %s): reconnecting", code, reason)
                await self._reconnect()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surface anything unexpected to the consumer
            self._finish(exc)

    async def _read_until_closed(self, ws: ClientConnection) -> tuple[int, str]:
        try:
            async for raw in ws:
                frame = _decode(raw)
                if frame is not None:
                    await self._handle(frame)
        except ConnectionClosed:
            pass
        rcvd = ws.protocol.close_rcvd
        if rcvd is None:
            return 1006, "connection lost"
        return rcvd.code, rcvd.reason

    async def _reconnect(self) -> None:
        """Reconnect with exponential backoff and full jitter, then resume and resend fixes."""
        for attempt in range(self.max_reconnects):
            delay = self._rng.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2**attempt))
            await asyncio.sleep(delay)
            try:
                ws, welcome = await self._open()
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                if not should_reconnect(code):
                    raise RoomClosed(code, exc.rcvd.reason if exc.rcvd else "") from exc
                continue
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status < 500 and status not in (408, 429):
                    raise RoomRefused(status) from exc
                continue
            except (OSError, TimeoutError, InvalidHandshake, RoomError):
                continue
            self.reconnects += 1
            await self._after_reconnect(ws, welcome)
            return
        raise RoomUnavailable(f"could not reconnect to {self.url} in {self.max_reconnects} tries")

    async def _after_reconnect(self, ws: ClientConnection, welcome: Frame) -> None:
        """Resume the broadcasts, then resend unacked fixes in `seq` order, before any new fix
        goes out (the send lock is held until the socket is marked connected)."""
        their_seq = _int_or_none(welcome.get("seq"))
        same_history = (
            self.epoch is not None
            and welcome.get("epoch") == self.epoch
            and self.seq is not None
            and their_seq is not None
            and their_seq >= self.seq
        )
        if not same_history:
            self._adopt(welcome)  # history lost (or none yet): the snapshot is the truth
            self._put(welcome)
        async with self._send_lock:
            self._ws = ws
            if same_history and their_seq != self.seq:
                await ws.send(json.dumps(self._resume_frame()))
            sent_upto = 0
            for _ in range(100):  # bounded: fixes added while we resend go out in the next round
                pending = [f for s, f in self.unacked.items() if s > sent_upto]
                if not pending:
                    break
                for frame in pending:  # at-least-once; the server applies each seq once
                    await ws.send(json.dumps(frame, separators=(",", ":")))
                sent_upto = int(pending[-1]["seq"])
            self._connected.set()

    async def _pinger(self) -> None:
        for _ in itertools.count():
            await asyncio.sleep(self.ping_interval_s)
            if self._closing:
                return
            if not self.connected:
                continue
            with contextlib.suppress(ConnectionClosed, RoomError):
                await self._send({"type": "ping", "t0": self._clock()})

    async def _send(self, frame: Frame) -> None:
        self._raise_if_failed()
        if self._ws is None or not self.connected:
            raise _NotConnected("not connected")
        async with self._send_lock:
            ws = self._ws
            if not self.connected:
                raise _NotConnected("not connected")
            await ws.send(json.dumps(frame, separators=(",", ":")))

    # internals: frames

    async def _handle(self, frame: Frame) -> None:
        kind = frame.get("type")
        self._notify(frame)
        if kind == "pong":
            t0, t1, t2 = frame.get("t0"), frame.get("t1"), frame.get("t2")
            if (
                isinstance(t0, int | float)
                and isinstance(t1, int | float)
                and isinstance(t2, int | float)
            ):
                self.clock.add(float(t0), float(t1), float(t2), self._clock())
            return
        if kind == "ack":
            seq = _int_or_none(frame.get("seq"))
            if seq is not None and self.unacked.pop(seq, None) is not None:
                self.acked_count += 1
            if self.deliver_acks:
                self._put(frame)
            return
        if kind == "welcome":  # the answer to a resume that could not be replayed
            self._adopt(frame)
            self._put(frame)
            return
        seq = _int_or_none(frame.get("seq"))
        if kind in BROADCASTS or (seq is not None and "epoch" in frame):
            await self._broadcast(frame, seq)
            return
        self._put(frame)

    async def _broadcast(self, frame: Frame, seq: int | None) -> None:
        epoch = frame.get("epoch")
        if seq is None or self.seq is None:
            self._put(frame)
            return
        if epoch is not None and self.epoch is not None and str(epoch) != self.epoch:
            # the server lost the room's history: ask for the snapshot it sends on resume
            self.gaps_seen += 1
            await self._ask_resume()
            return
        if seq <= self.seq:
            return  # a duplicate (replayed or resent): delivered already
        if seq > self.seq + 1:
            self.gaps_seen += 1
            await self._ask_resume()
            return  # dropped; the replay brings it back in order
        self.seq = seq
        self._resume_pending_until = None
        self._put(frame)

    async def _ask_resume(self) -> None:
        """One resume per gap; ask again only if many frames pass without the replay."""
        self._dropped_since_resume += 1
        if self._resume_pending_until == self.seq and self._dropped_since_resume < 64:
            return
        with contextlib.suppress(ConnectionClosed, _NotConnected):
            await self.resume()

    def _put(self, item: Any) -> None:
        if self._frames.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._frames.get_nowait()  # drop the oldest: a slow reader loses old frames
                self.dropped_frames += 1
        self._frames.put_nowait(item)

    def _finish(self, failure: BaseException | None) -> None:
        if self._failure is None and failure is not None:
            self._failure = failure
        self._connected.clear()
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(failure or RoomError("the room connection ended"))
                fut.exception()  # mark retrieved
        self._waiters = []
        self._put(_END)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _wait(self, predicate: Callable[[Frame], bool]) -> asyncio.Future[Frame]:
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        return fut

    def _drop_waiter(self, fut: asyncio.Future[Frame]) -> None:
        self._waiters = [(p, f) for p, f in self._waiters if f is not fut]

    def _notify(self, frame: Frame) -> None:
        keep = []
        for predicate, fut in self._waiters:
            if fut.done():
                continue
            if predicate(frame):
                fut.set_result(frame)
            else:
                keep.append((predicate, fut))
        self._waiters = keep


def _decode(raw: str | bytes) -> Frame | None:
    try:
        frame = json.loads(raw)
    except ValueError:
        log.warning("room sent a frame that is not JSON")
        return None
    return frame if isinstance(frame, dict) else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _is_pong(frame: Frame, t0: float, cid: str) -> bool:
    return frame.get("type") == "pong" and (frame.get("cid") == cid or frame.get("t0") == t0)


def _answers_control(frame: Frame, cid: str) -> bool:
    kind = frame.get("type")
    if kind == "error":
        return frame.get("ref") in (cid, "control")
    return kind in ("countdown", "event")
