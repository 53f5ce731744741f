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


def should_reconnect(code: int) -> bool:
    """Whether a close code invites the client back (docs/protocol.md, "Close codes"): the
    codes in `RECONNECT_CODES` and 4000-4499; never `TERMINAL_CODES` nor 4500-4999."""
    if code in TERMINAL_CODES or 4500 <= code <= 4999:
        return False
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


class ResultRow(TypedDict):
    place: int | None
    runner_id: str
    time_s: float | None
    distance_m: float
    status: str


class DrillPhase(TypedDict):
    move: str
    duration_s: float
    switch_cues: int
    prompt: str


class DrillPublic(TypedDict):
    """`GET /api/v1/drills/{id}`: the drill, its cues (server times) and, once over, scores."""

    id: str
    title: str
    coach_id: str
    club_id: str | None
    status: str
    phases: list[DrillPhase]
    start_at: float | None
    cues: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    sync_score: float | None
    room: str


class Pairing(TypedDict):
    runner_id: str
    spotter_id: str
    status: str
    created_at: str
    accepted_at: str | None


class Pairings(TypedDict):
    spotters: list[Pairing]
    spotting: list[Pairing]


class ShareLink(TypedDict):
    id: str
    label: str
    created_at: str
    expires_at: str
    revoked_at: str | None
    active: bool
    token: str  # only in the answer to `create_share_link`
    watch_url: str  # idem


class WatchRace(TypedDict):
    id: str
    title: str
    status: str
    scheduled_at: float
    start_at: float | None
    room: str


class Watch(TypedDict):
    """`GET /api/v1/spotters/watch/{token}`: what a share link follows."""

    runner_id: str
    handle: str | None
    expires_at: str
    races: list[WatchRace]


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

    async def withdraw_from_race(self, race_id: str) -> JSON:
        return cast(JSON, await self._request("POST", f"{API}/races/{_seg(race_id)}/withdraw"))

    async def races(self) -> list[JSON]:
        return cast(list[JSON], await self._request("GET", f"{API}/races"))

    async def race_results(self, race_id: str) -> JSON:
        """`{status, results: [ResultRow ...]}`; final once the race is closed."""
        return cast(JSON, await self._request("GET", f"{API}/races/{_seg(race_id)}/results"))

    # drills

    async def drill_templates(self) -> list[JSON]:
        """The drill library (key, title, level, safety notes, phases)."""
        return cast(list[JSON], await self._request("GET", f"{API}/drills/templates"))

    async def create_drill(
        self,
        *,
        template: str | None = None,
        title: str | None = None,
        phases: list[Mapping[str, Any]] | None = None,
        level: str | None = None,
        club_id: str | None = None,
    ) -> DrillPublic:
        """Schedule a drill from a library `template`, or your own `title` + `phases`; you are
        its coach. Join its room (`room(drill["id"])`) and `start()` it there."""
        body: JSON = {}
        for key, value in (
            ("template", template),
            ("title", title),
            ("level", level),
            ("club_id", club_id),
        ):
            if value is not None:
                body[key] = value
        if phases is not None:
            body["phases"] = [dict(p) for p in phases]
        return cast(DrillPublic, await self._request("POST", f"{API}/drills", json_body=body))

    async def drill(self, drill_id: str) -> DrillPublic:
        """A drill; once finished it carries `scores` and the group `sync_score`."""
        return cast(DrillPublic, await self._request("GET", f"{API}/drills/{_seg(drill_id)}"))

    # spotters

    async def invite_spotter(self, handle: str) -> Pairing:
        """Ask the account `handle` to be your spotter (they accept with `accept_spotter`)."""
        body = {"handle": handle}
        answer = await self._request("POST", f"{API}/spotters/invites", json_body=body)
        return cast(Pairing, answer)

    async def accept_spotter(self, runner_id: str) -> Pairing:
        """Accept a runner's invitation: from then on you get their alerts in their races."""
        path = f"{API}/spotters/invites/{_seg(runner_id)}/accept"
        return cast(Pairing, await self._request("POST", path))

    async def spotters(self) -> Pairings:
        """Your spotters and the runners you spot (both directions)."""
        return cast(Pairings, await self._request("GET", f"{API}/spotters"))

    async def end_pairing(self, other_id: str) -> None:
        await self._request("DELETE", f"{API}/spotters/pairings/{_seg(other_id)}")

    async def create_share_link(
        self, label: str = "", expires_in_s: int | None = None
    ) -> ShareLink:
        """A live-follow link for someone without an account; its `token` is shown only here."""
        body: JSON = {"label": label}
        if expires_in_s is not None:
            body["expires_in_s"] = expires_in_s
        return cast(ShareLink, await self._request("POST", f"{API}/spotters/links", json_body=body))

    async def share_links(self) -> list[ShareLink]:
        return cast(list[ShareLink], await self._request("GET", f"{API}/spotters/links"))

    async def revoke_share_link(self, link_id: str) -> None:
        """Revoke a link: sockets following with it are closed with 4511 (for good)."""
        await self._request("DELETE", f"{API}/spotters/links/{_seg(link_id)}")

    async def watch(self, share_token: str) -> Watch:
        """What a share link follows (no account needed): the runner and their races."""
        path = f"{API}/spotters/watch/{_seg(share_token)}"
        return cast(Watch, await self._request("GET", path))

    # rooms

    @property
    def ws_base(self) -> str:
        if self.base_url.startswith("https://"):
            return "wss://" + self.base_url.removeprefix("https://")
        return "ws://" + self.base_url.removeprefix("http://")

    def room_url(self, room_id: str) -> str:
        return f"{self.ws_base}/ws/rooms/{_seg(room_id)}"

    def room(self, room_id: str, **options: Any) -> RoomConnection:
        """A connection to `WS /ws/rooms/{room_id}` (a race id or a drill id) authenticated
        with this client's token; `options` are `RoomConnection`'s keyword arguments.

        After a 4401 close (bad or expired token) the connection signs in again before it
        reconnects, when this client signed in with `login`; otherwise it ends (`RoomClosed`).
        """
        conn: RoomConnection

        async def token() -> str:
            if conn.close_code == TOKEN_REJECTED:
                if self._credentials is None:
                    raise RoomClosed(TOKEN_REJECTED, "the token was refused and cannot be renewed")
                await self.login(*self._credentials)
            if self.token is None:
                raise RoomError("sign in first: a room needs a bearer token")
            return self.token

        conn = RoomConnection(self.room_url(room_id), token, **options)
        return conn

    def share_room(self, room_id: str, share_token: str, **options: Any) -> RoomConnection:
        """A race room joined with a spotter's share link (`auth {share_token}`), no account
        needed: role `spotter`, following the link's runner."""
        return RoomConnection(self.room_url(room_id), share_token=share_token, **options)

    async def follow(
        self, share_token: str, race_id: str | None = None, **options: Any
    ) -> RoomConnection:
        """The room of the share link's runner's race: `race_id`, else their live race (or the
        next one). Not connected yet: use `async with await api.follow(token) as room`."""
        if race_id is None:
            races = (await self.watch(share_token))["races"]
            if not races:
                raise RoomError("the share link's runner has no upcoming or live race")
            live = [r for r in races if r["status"] in ("countdown", "running", "paused")]
            race_id = (live or races)[0]["id"]
        return self.share_room(race_id, share_token, **options)


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


# Rooms: clock


@dataclass(frozen=True, slots=True)
class ClockSample:
    """One ping/pong exchange: `offset_s` = server clock - local clock, `rtt_s` its round trip."""

    offset_s: float
    rtt_s: float


class ClockSync:
    """NTP's clock filter, as docs/protocol.md prescribes: each `ping`/`pong` exchange gives an
    offset ((t1 - t0) + (t2 - t3)) / 2 and a round trip (t3 - t0) - (t2 - t1); the estimate is
    the offset of the fastest of the last `window` exchanges (its error is at most rtt / 2)."""

    def __init__(self, window: int = 8) -> None:
        self.window = window
        self.samples: list[ClockSample] = []
        self._rough: float | None = None

    def add(self, t0: float, t1: float, t2: float, t3: float) -> ClockSample:
        sample = ClockSample(((t1 - t0) + (t2 - t3)) / 2.0, max(0.0, (t3 - t0) - (t2 - t1)))
        self.samples = [*self.samples[-(self.window - 1) :], sample]
        return sample

    def rough(self, server_time: float, local_time: float) -> None:
        """A first guess from `welcome.server_time`, used until an exchange finishes."""
        if self._rough is None:
            self._rough = server_time - local_time

    @property
    def best(self) -> ClockSample | None:
        return min(self.samples, key=lambda s: s.rtt_s) if self.samples else None

    @property
    def offset_s(self) -> float | None:
        best = self.best
        return best.offset_s if best is not None else self._rough

    @property
    def rtt_s(self) -> float | None:
        best = self.best
        return best.rtt_s if best is not None else None


# Rooms: the connection


_END = object()
_DEFAULT: Any = object()


class RoomConnection:
    """One client of a live room (race or drill), kept alive across network failures.

    Use `async with` (or `await connect()` ... `await close()`); iterate for incoming frames
    (dicts): `welcome` (first, and again whenever the server sent a fresh snapshot), `countdown`,
    `standings`, `event`, race results, drill `phase` / `cue` / `drill_results`, drill `ack`,
    safety `alert*` frames, `error` and unknown types; `pong`, `clock` and race `ack` frames are
    consumed here (pass `deliver_acks=True` to see race acks). Broadcasts are delivered in `seq`
    order, once each: a gap asks the server to `resume`, a duplicate is dropped.

    Reconnecting: see the module docstring. `backoff_base_s` doubles per failed attempt up to
    `backoff_cap_s`, each wait drawn uniformly from [0, that] (full jitter); `reconnect_for_s`
    bounds one outage (None: the life of the room), `max_reconnects` the attempts per outage
    (None: no bound). `liveness_timeout_s` (default three ping intervals; None: off) is how long
    a connected socket may stay silent before it is dropped and replaced; the `ping` every
    `ping_interval_s` makes the server answer, so a healthy room is never silent that long.

    Sign in with `token` (a bearer token, or an async function returning one, asked again on
    each reconnect) or `share_token` (a spotter's share link; role `spotter`).
    """

    def __init__(
        self,
        url: str,
        token: TokenSource | None = None,
        *,
        share_token: str | None = None,
        sync_samples: int = 5,
        ping_interval_s: float = 10.0,
        liveness_timeout_s: float | None = _DEFAULT,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 8.0,
        reconnect_for_s: float | None = None,
        max_reconnects: int | None = None,
        open_timeout_s: float = 10.0,
        max_unacked: int = 20_000,
        queue_size: int = 2_000,
        gps_seq_start: int = 1,
        deliver_acks: bool = False,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if (token is None) == (share_token is None):
            raise ValueError("sign in with exactly one of token and share_token")
        self.url = url
        self._token = token
        self._share_token = share_token
        self.sync_samples = sync_samples
        self.ping_interval_s = ping_interval_s
        self.liveness_timeout_s: float | None = (
            3.0 * ping_interval_s if liveness_timeout_s is _DEFAULT else liveness_timeout_s
        )
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.reconnect_for_s = reconnect_for_s
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
        self.kind: str = "race"  # "race" or "drill" (welcome.kind)
        self.role: str | None = None
        self.you: str | None = None
        self.may_control = False  # welcome.control
        self.spotting: list[str] = []  # runners this connection spots (welcome.spotting)
        self.alerts: dict[str, Frame] = {}  # open safety alerts seen, by id
        self.spotted: list[Frame] = []  # spotted runners' rows (with `position`), latest
        self.standings: Frame | None = None  # the latest standings frame
        self.cues: dict[int, Frame] = {}  # drill cues announced, by id
        self.phase: Frame | None = None  # the current drill phase frame
        self.room_clock: Frame | None = None  # the drill room's latest `clock` answer
        self.drill_acks: dict[int, Frame] = {}  # the drill room's `ack` answers, by cue
        self.race_results: list[Frame] | None = None  # race results (`closed` or snapshot)
        self.drill_results: Frame | None = None  # the `drill_results` frame

        # GPS: numbered per runner; kept until acknowledged
        self._next_gps_seq = gps_seq_start
        self.unacked: OrderedDict[int, Frame] = OrderedDict()
        self.acked_count = 0  # fixes acknowledged (an ack, or covered by welcome.acked_seq)
        self.server_acked_seq = 0  # highest fix seq the server said it stored
        self.resent: list[int] = []  # seqs resent after the latest reconnect, in order
        self.resent_count = 0

        # bookkeeping, public for tests and dashboards
        self.connects = 0
        self.reconnects = 0
        self.reconnect_attempts = 0  # failed or not, over the connection's life
        self.stalls = 0  # connections dropped for silence
        self.resumes_sent = 0
        self.gaps_seen = 0
        self.dropped_frames = 0
        self.close_code: int | None = None  # of the last lost connection

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
        self._last_rx = time.monotonic()

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

    async def connect(self, *, retry: bool = False) -> Frame:
        """Connect, authenticate, take the `welcome`, and sync the clock. Returns the welcome.

        Without `retry` the first connection is one attempt: a close during the handshake
        raises `RoomClosed` (its `code` says whether coming back later may help), an HTTP
        refusal `RoomRefused`. With `retry` it is attempted like a reconnect (backoff, the
        same limits), e.g. for a server that is still starting.
        """
        if retry:
            ws, welcome = await self._open_retrying()
        else:
            try:
                ws, welcome = await self._open()
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                raise RoomClosed(rcvd.code if rcvd else 1006, rcvd.reason if rcvd else "") from exc
            except InvalidStatus as exc:
                raise RoomRefused(exc.response.status_code) from exc
        self._adopt(welcome)
        if self._next_gps_seq <= self.server_acked_seq:
            # this runner sent fixes before (another device, an app restart): number on
            self._next_gps_seq = self.server_acked_seq + 1
        self._put(welcome)
        self._attach(ws)
        self._tasks = [
            asyncio.create_task(self._supervise(), name="room-reader"),
            asyncio.create_task(self._pinger(), name="room-pinger"),
        ]
        if self.liveness_timeout_s is not None:
            self._tasks.append(asyncio.create_task(self._watchdog(), name="room-watchdog"))
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

    @property
    def over(self) -> bool:
        """The room ended for good (e.g. closed with 4504): no reconnect will follow."""
        return isinstance(self._failure, RoomClosed)

    def abort_transport(self) -> None:
        """Drop the socket without a closing handshake, as a network failure would (close code
        1006 on this side). The connection then reconnects and resumes by itself."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait (bounded) until a socket is up and welcomed again after an outage."""
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    # time

    @property
    def offset_s(self) -> float | None:
        """Server clock - local clock, in seconds. In a drill room, the offset the room itself
        applies to this connection's acks (its latest `clock` answer); elsewhere the fastest of
        the last 8 ping/pong exchanges (before any: a rough guess from the welcome)."""
        if self.room_clock is not None and isinstance(self.room_clock.get("offset"), int | float):
            return float(self.room_clock["offset"])
        return self.clock.offset_s

    def server_now(self) -> float:
        """The server's clock now (Unix seconds)."""
        return self._clock() + (self.offset_s or 0.0)

    def local_time(self, server_time: float) -> float:
        """A server time (a cue's `at`, a countdown's `start_at`) on this client's clock."""
        return server_time - (self.offset_s or 0.0)

    def server_time(self, local_time: float) -> float:
        """A time on this client's clock as server time."""
        return local_time + (self.offset_s or 0.0)

    def now(self) -> float:
        """This client's clock (the `clock` it was given; `time.time` by default)."""
        return self._clock()

    async def sleep_until(self, server_time: float) -> None:
        """Sleep until the server clock reads `server_time` (e.g. fire a cue at its `at`)."""
        delay = self.local_time(server_time) - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)

    async def sync_clock(self, samples: int = 5, timeout_s: float = 5.0) -> float | None:
        """Exchange `samples` ping/pong pairs one after another; returns the offset.

        In a drill room each finished exchange is reported with `sync {t0, t1, t2, t3}` and its
        `clock` answer awaited (the room refuses acks before 3 such reports)."""
        for _ in range(max(0, samples)):
            cid = f"p{next(self._cids)}"
            t0 = self._clock()
            answer = self._wait(functools.partial(_answers_ping, cid=cid, sync=self._reports_sync))
            try:
                await self._send({"type": "ping", "t0": t0, "cid": cid})
                await asyncio.wait_for(answer, timeout_s)
            except (TimeoutError, ConnectionClosed, RoomError):
                self._drop_waiter(answer)
                break
        return self.offset_s

    @property
    def is_drill(self) -> bool:
        return self.kind == "drill"

    @property
    def _reports_sync(self) -> bool:
        """Drill rooms want each finished exchange reported (spotters only watch)."""
        return self.is_drill and self.role != "spotter"

    # sending: race runners

    async def send_gps(self, fix: Mapping[str, Any]) -> int:
        """Send one fix (`t` in server time, `lat`, `lon`, optional `acc`, `heading`, `speed`,
        `course`, `cadence`, `mock`, `echo`); returns its per-runner `seq`. The fix is kept until
        the server acknowledges it and resent after a reconnect unless the server's
        `welcome.acked_seq` covers it. While disconnected it is queued."""
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

    async def wait_acked(self, timeout_s: float) -> None:
        """Wait (bounded) until every fix sent so far is acknowledged; `TimeoutError` else."""
        async with asyncio.timeout(timeout_s):
            while self.unacked:
                self._raise_if_failed()
                await asyncio.sleep(0.02)

    async def ready(self) -> None:
        """Tell the organiser this runner is at the start line."""
        await self._send({"type": "ready"})

    # sending: moderators, organisers and coaches (`control`)

    async def control(
        self, action: str, *, timeout_s: float | None = None, **fields: Any
    ) -> Frame | None:
        """A `control` frame: races take `start` {countdown_s}, `pause`, `resume`, `abort`
        {reason}, `disqualify` {runner_id, reason} and `close`; drills `start` {countdown_s}
        and `close`.

        With `timeout_s`, waits for the outcome: the broadcast this action causes (`countdown`
        for a race start, `event started` for a drill start, the `paused` / `resumed` /
        `aborted` / `disqualified` / `closed` event, `drill_results` for a drill close) is
        returned, an `error` that refers to this frame raises `FrameRefused`, and nothing within
        the time returns None. Without it, returns at once (errors arrive as frames).
        """
        self._raise_if_failed()
        cid = f"c{next(self._cids)}"
        waiter = None
        if timeout_s is not None:
            expect = functools.partial(
                _answers_control, cid=cid, action=action, drill=self.is_drill, fields=fields
            )
            waiter = self._wait(expect)
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

    async def _control_or_raise(self, action: str, timeout_s: float, **fields: Any) -> Frame:
        frame = await self.control(action, timeout_s=timeout_s, **fields)
        if frame is None:
            raise RoomError(f"no answer to control {action} within {timeout_s:g} s")
        return frame

    async def start(self, countdown_s: float | None = None, *, timeout_s: float = 10.0) -> Frame:
        """Start the race (a countdown to the gun; returns the `countdown` frame with
        `start_at`) or the drill (`countdown_s` = lead before the first cue; returns the
        `started` event)."""
        fields = {} if countdown_s is None else {"countdown_s": countdown_s}
        return await self._control_or_raise("start", timeout_s, **fields)

    async def pause(self, *, timeout_s: float = 10.0) -> Frame:
        """Pause the race (race time stops); returns the `paused` event."""
        return await self._control_or_raise("pause", timeout_s)

    async def resume_race(self, *, timeout_s: float = 10.0) -> Frame:
        """Resume a paused race; returns the `resumed` event. (`resume()` is the protocol's
        replay of missed broadcasts, not this.)"""
        return await self._control_or_raise("resume", timeout_s)

    async def abort(self, reason: str, *, timeout_s: float = 10.0) -> Frame:
        """Abort the race; returns the `aborted` event. Every socket is then closed with 4504."""
        return await self._control_or_raise("abort", timeout_s, reason=reason)

    async def disqualify(self, runner_id: str, reason: str, *, timeout_s: float = 10.0) -> Frame:
        """Disqualify a runner; returns the `disqualified` event."""
        return await self._control_or_raise(
            "disqualify", timeout_s, runner_id=runner_id, reason=reason
        )

    async def finish(self, *, timeout_s: float = 10.0) -> Frame:
        """`control close`: close the race now (the `closed` event with the results; runners
        still out are DNF) or finish the drill now (`drill_results`). Then 4504 for everyone."""
        return await self._control_or_raise("close", timeout_s)

    # sending: drill participants

    async def ack(
        self,
        cue: int | Mapping[str, Any],
        at: float | None = None,
        *,
        steadiness: float | None = None,
        timeout_s: float = 10.0,
    ) -> Frame:
        """Acknowledge drill cue `cue` (its id, or the cue frame): `at` is the moment of the tap
        on this client's own clock (default: now); the room converts it with this connection's
        clock offset. For a `balance_hold` cue pass `steadiness` (0..1, 1 = perfectly still)
        measured over the hold. Returns the room's `ack {cue, reaction_ms, steadiness}` (sent
        once stored, within about a second); a refusal (`ack_early`, `ack_late`,
        `ack_duplicate`, `clock_unsynced` ...) raises `FrameRefused`."""
        cue_id = int(cue["id"]) if isinstance(cue, Mapping) else int(cue)
        frame: Frame = {"type": "ack", "cue": cue_id, "t": self._clock() if at is None else at}
        if steadiness is not None:
            frame["steadiness"] = steadiness
        return await self._request_reply(frame, lambda f, c: f.get("type") == "ack", timeout_s)

    # sending: spotters, runners and moderators (safety alerts)

    async def ack_alert(self, alert_id: str, *, timeout_s: float = 10.0) -> Frame:
        """Acknowledge a safety alert (spotters of its runner, moderators): someone is on it.
        Returns the `alert_acked` frame; a refusal raises `FrameRefused`."""
        return await self._request_reply(
            {"type": "alert_ack", "id": alert_id},
            lambda f, c: f.get("type") == "alert_acked" and f.get("id") == alert_id,
            timeout_s,
        )

    async def cancel_alert(self, alert_id: str, *, timeout_s: float = 10.0) -> Frame:
        """The runner cancels their own alert (a false alarm) before its `cancel_until`.
        Returns the `alert_cancelled` frame; a refusal raises `FrameRefused`."""
        return await self._request_reply(
            {"type": "alert_cancel", "id": alert_id},
            lambda f, c: f.get("type") == "alert_cancelled" and f.get("id") == alert_id,
            timeout_s,
        )

    async def next_alert(self, timeout_s: float) -> Frame:
        """The next `alert` or `alert_escalated` frame (already open ones are in `alerts`)."""
        return await self.wait_for(
            lambda f: f.get("type") in ("alert", "alert_escalated"), timeout_s
        )

    # receiving

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

    @property
    def results(self) -> list[Frame] | Frame | None:
        """The room's results once known: a race's result rows (`closed` event or the welcome of
        a finished race), a drill's `drill_results` frame (scores, sync score); else None."""
        if self.drill_results is not None:
            return self.drill_results
        return self.race_results

    # internals: connection

    async def _auth_frame(self) -> Frame:
        if self._share_token is not None:
            return {"type": "auth", "share_token": self._share_token}
        token = self._token
        assert token is not None
        return {"type": "auth", "token": token if isinstance(token, str) else await token()}

    async def _open(self) -> tuple[ClientConnection, Frame]:
        """One attempt: open the socket, send `auth`, read until `welcome`."""
        auth = await self._auth_frame()
        ws = await connect(
            self.url, open_timeout=self.open_timeout_s, max_size=2**22, close_timeout=5
        )
        try:
            await ws.send(json.dumps(auth))
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
            ws.transport.abort()  # the server may be stalled: do not wait for a close handshake
            raise

    def _attach(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._last_rx = time.monotonic()
        self._connected.set()

    def _adopt(self, welcome: Frame) -> None:
        """A welcome is a new baseline: snapshot, `seq`, `epoch`, and the fixes stored."""
        self.welcome = welcome
        self.seq = _int_or_none(welcome.get("seq"))
        self.epoch = None if welcome.get("epoch") is None else str(welcome.get("epoch"))
        self.kind = str(welcome.get("kind") or "race")
        self.role = welcome.get("role")
        self.you = welcome.get("you")
        self.may_control = bool(welcome.get("control"))
        spotting = welcome.get("spotting")
        self.spotting = [str(r) for r in spotting] if isinstance(spotting, list) else []
        self._resume_pending_until = None
        if isinstance(welcome.get("server_time"), int | float):
            self.clock.rough(float(welcome["server_time"]), self._clock())
        snapshot = welcome.get("snapshot")
        if isinstance(snapshot, dict):
            self._adopt_snapshot(snapshot)
        acked = _int_or_none(welcome.get("acked_seq"))
        if acked is not None:
            self._stored_upto(acked)

    def _adopt_snapshot(self, snapshot: Frame) -> None:
        alerts = snapshot.get("alerts")
        if isinstance(alerts, list):
            self.alerts = {str(a["id"]): a for a in alerts if isinstance(a, dict) and "id" in a}
        spotted = snapshot.get("spotted")
        if isinstance(spotted, list):
            self.spotted = spotted
        results = snapshot.get("results")
        if isinstance(results, list):
            self.race_results = results
        elif isinstance(results, dict):  # a finished drill: {scores, sync_score}
            self.drill_results = {"type": "drill_results", **results}
        for cue in snapshot.get("cues") or ():
            if isinstance(cue, dict) and isinstance(cue.get("id"), int):
                self.cues[cue["id"]] = cue
        if isinstance(snapshot.get("phase"), dict):
            self.phase = snapshot["phase"]

    def _stored_upto(self, acked_seq: int) -> None:
        """The server stored every fix up to `acked_seq`: forget them, never resend them."""
        if acked_seq < self.server_acked_seq:
            log.warning(
                "the room stored fixes up to %s, it said %s before",
                acked_seq,
                self.server_acked_seq,
            )
        self.server_acked_seq = max(self.server_acked_seq, acked_seq)
        for seq in [s for s in self.unacked if s <= acked_seq]:
            del self.unacked[seq]
            self.acked_count += 1

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
                if not self._may_retry(code):
                    self._finish(RoomClosed(code, reason))
                    return
                log.info("room connection lost (%s %s): reconnecting", code, reason)
                await self._reconnect()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surface anything unexpected to the consumer
            self._finish(exc)

    def _may_retry(self, code: int) -> bool:
        if code == TOKEN_REJECTED and self._token is not None and isinstance(self._token, str):
            return False  # the same token would be refused again
        return should_reconnect(code)

    async def _read_until_closed(self, ws: ClientConnection) -> tuple[int, str]:
        try:
            async for raw in ws:
                self._last_rx = time.monotonic()
                frame = _decode(raw)
                if frame is not None:
                    await self._handle(frame)
        except ConnectionClosed:
            pass
        rcvd = ws.protocol.close_rcvd
        if rcvd is None:
            return 1006, "connection lost"
        return rcvd.code, rcvd.reason

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)]; after a 4429 (flooding)
        at least half the cap."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** min(attempt, 30))
        floor = self.backoff_cap_s / 2 if self.close_code == FLOODING else 0.0
        return self._rng.uniform(min(floor, ceiling), max(floor, ceiling))

    async def _open_retrying(self) -> tuple[ClientConnection, Frame]:
        """Attempt `_open` until it succeeds, a terminal answer comes, or a limit is reached."""
        lost_at = time.monotonic()
        attempt = 0
        while True:
            if self.max_reconnects is not None and attempt >= self.max_reconnects:
                raise RoomUnavailable(f"could not reach {self.url} in {attempt} tries")
            delay = self._backoff(attempt)
            if self.reconnect_for_s is not None:
                left = self.reconnect_for_s - (time.monotonic() - lost_at)
                if left <= 0:
                    raise RoomUnavailable(
                        f"could not reach {self.url} for {self.reconnect_for_s:g} s"
                        f" ({attempt} tries)"
                    )
                delay = min(delay, left)
            await asyncio.sleep(delay)
            attempt += 1
            self.reconnect_attempts += 1
            try:
                return await self._open()
            except RoomClosed:
                raise  # the token source gave up (a refused token it cannot renew)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                self.close_code = code
                if not self._may_retry(code):
                    raise RoomClosed(code, exc.rcvd.reason if exc.rcvd else "") from exc
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status < 500 and status not in (408, 429):
                    raise RoomRefused(status) from exc
            except (OSError, TimeoutError, InvalidHandshake, RoomError) as exc:
                log.debug("room reconnect attempt %s failed: %r", attempt, exc)

    async def _reconnect(self) -> None:
        ws, welcome = await self._open_retrying()
        self.reconnects += 1
        await self._after_reconnect(ws, welcome)
        if self._reports_sync and self.sync_samples:
            # the room lends this connection the account's last estimate; refresh it (in its
            # own task: the exchanges' answers come through this reader)
            self._tasks.append(
                asyncio.create_task(self._resync(), name="room-resync"),
            )

    async def _resync(self) -> None:
        with contextlib.suppress(RoomError, ConnectionClosed):
            await self.sync_clock(self.sync_samples)

    async def _after_reconnect(self, ws: ClientConnection, welcome: Frame) -> None:
        """Resume the broadcasts, forget the fixes the server stored (`acked_seq`), resend the
        rest in `seq` order before any new fix goes out (the send lock is held until the socket
        is marked connected)."""
        their_seq = _int_or_none(welcome.get("seq"))
        same_history = (
            self.epoch is not None
            and welcome.get("epoch") == self.epoch
            and self.seq is not None
            and their_seq is not None
            and their_seq >= self.seq
        )
        if same_history:
            self.welcome = welcome
            acked = _int_or_none(welcome.get("acked_seq"))
            if acked is not None:
                self._stored_upto(acked)
        else:
            self._adopt(welcome)  # history lost (or none yet): the snapshot is the truth
            self._put(welcome)
        async with self._send_lock:
            self._ws = ws
            if same_history and their_seq != self.seq:
                await ws.send(json.dumps(self._resume_frame()))
            self.resent = []
            sent_upto = 0
            for _ in range(100):  # bounded: fixes added while we resend go out in the next round
                pending = [f for s, f in self.unacked.items() if s > sent_upto]
                if not pending:
                    break
                for frame in pending:  # at-least-once; the server applies each seq once
                    await ws.send(json.dumps(frame, separators=(",", ":")))
                    self.resent.append(int(frame["seq"]))
                sent_upto = int(pending[-1]["seq"])
            self.resent_count += len(self.resent)
            self._attach(ws)

    async def _pinger(self) -> None:
        """A `ping` every `ping_interval_s`: keeps the clock estimate fresh (reported with
        `sync` in drill rooms) and makes the server answer, which the watchdog relies on."""
        while not self._closing:
            await asyncio.sleep(self.ping_interval_s)
            if self._closing:
                return
            if not self.connected:
                continue
            with contextlib.suppress(ConnectionClosed, RoomError):
                cid = f"p{next(self._cids)}"
                await self._send({"type": "ping", "t0": self._clock(), "cid": cid})

    async def _watchdog(self) -> None:
        """Stalled-connection detection: a connected socket that brought no frame (pong or
        anything) for `liveness_timeout_s` is dropped; the reader then reconnects."""
        timeout = self.liveness_timeout_s
        assert timeout is not None
        while not self._closing:
            await asyncio.sleep(min(1.0, timeout / 4))
            ws = self._ws
            if ws is None or not self.connected:
                continue
            if time.monotonic() - self._last_rx > timeout:
                self.stalls += 1
                log.info("room connection silent for %.1f s: replacing it", timeout)
                self._connected.clear()
                ws.transport.abort()

    async def _send(self, frame: Frame) -> None:
        self._raise_if_failed()
        if self._ws is None or not self.connected:
            raise _NotConnected("not connected")
        async with self._send_lock:
            ws = self._ws
            if not self.connected:
                raise _NotConnected("not connected")
            await ws.send(json.dumps(frame, separators=(",", ":")))

    async def _request_reply(
        self, frame: Frame, answers: Callable[[Frame, str], bool], timeout_s: float
    ) -> Frame:
        """Send `frame` with a fresh `cid`; the reply is the first frame for which `answers`
        holds and that echoes the cid (if it carries one), or an `error` whose `ref` is the cid
        (raised as `FrameRefused`)."""
        self._raise_if_failed()
        cid = f"r{next(self._cids)}"

        def matches(f: Frame) -> bool:
            if f.get("type") == "error":
                return f.get("ref") == cid
            return answers(f, cid) and f.get("cid", cid) == cid

        waiter = self._wait(matches)
        try:
            await self._send({**frame, "cid": cid})
            reply = await asyncio.wait_for(waiter, timeout_s)
        finally:
            self._drop_waiter(waiter)
        if reply.get("type") == "error":
            raise FrameRefused(reply)
        return reply

    # internals: frames

    async def _handle(self, frame: Frame) -> None:
        kind = frame.get("type")
        self._track(frame)
        self._notify(frame)
        if kind == "pong":
            await self._pong(frame)
            return
        if kind == "clock":
            self.room_clock = frame
            return
        if kind == "ack":
            if "cue" in frame:  # a drill ack: the answer to `ack()`
                self._put(frame)
                return
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

    async def _pong(self, frame: Frame) -> None:
        t3 = self._clock()
        t0, t1, t2 = frame.get("t0"), frame.get("t1"), frame.get("t2")
        if not all(isinstance(t, int | float) for t in (t0, t1, t2)):
            return
        times = (float(cast(float, t0)), float(cast(float, t1)), float(cast(float, t2)), t3)
        self.clock.add(*times)
        if self._reports_sync:
            # the room sets this connection's offset from the exchanges it is told about
            sync: Frame = {
                "type": "sync",
                **dict(zip(("t0", "t1", "t2", "t3"), times, strict=True)),
            }
            if isinstance(frame.get("cid"), str):
                sync["cid"] = "s" + frame["cid"]
            with contextlib.suppress(ConnectionClosed, RoomError):
                await self._send(sync)

    def _track(self, frame: Frame) -> None:
        """Keep the room's latest state that callers read without iterating: standings, drill
        cues and phase, safety alerts, results."""
        kind = frame.get("type")
        if kind == "standings":
            self.standings = frame
            if isinstance(frame.get("spotted"), list):
                self.spotted = frame["spotted"]
        elif kind == "cue" and isinstance(frame.get("id"), int):
            self.cues[frame["id"]] = frame
        elif kind == "phase":
            self.phase = frame
        elif kind == "ack" and isinstance(frame.get("cue"), int):
            self.drill_acks[frame["cue"]] = frame
        elif kind == "drill_results":
            self.drill_results = frame
        elif kind == "event" and frame.get("event") == "closed":
            if isinstance(frame.get("results"), list):
                self.race_results = frame["results"]
        elif kind in ("alert", "alert_escalated") and "id" in frame:
            self.alerts[str(frame["id"])] = frame
        elif kind in ("alert_cancelled", "alert_acked") and "id" in frame:
            self.alerts.pop(str(frame["id"]), None)

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
        if self._failure is not None:
            fut.set_exception(self._failure)
            fut.exception()
            return fut
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


def _answers_ping(frame: Frame, cid: str, sync: bool) -> bool:
    """The end of one clock exchange: the `pong` (races), the `clock` answer to its `sync`
    (drills), or an error about either."""
    kind = frame.get("type")
    if kind == "error":
        return frame.get("ref") in (cid, "s" + cid)
    if sync:
        return kind == "clock" and frame.get("cid") == "s" + cid
    return kind == "pong" and frame.get("cid") == cid


_CONTROL_EVENTS = {
    "pause": "paused",
    "resume": "resumed",
    "abort": "aborted",
    "disqualify": "disqualified",
    "close": "closed",
}


def _answers_control(
    frame: Frame, cid: str, action: str, drill: bool, fields: Mapping[str, Any]
) -> bool:
    """Whether `frame` is the outcome of a `control {action}` sent with `cid`."""
    kind = frame.get("type")
    if kind == "error":
        return frame.get("ref") in (cid, "control")
    if action == "start":
        return kind == "event" and frame.get("event") == "started" if drill else kind == "countdown"
    if drill and action == "close":
        return kind == "drill_results"
    if kind != "event" or frame.get("event") != _CONTROL_EVENTS.get(action):
        return False
    return action != "disqualify" or frame.get("runner_id") == fields.get("runner_id")
