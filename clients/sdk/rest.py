"""The REST client: `RetroRunClient` over one `httpx.AsyncClient` (docs/api.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, cast
from urllib.parse import quote

import httpx

from clients.sdk.errors import ApiError, RoomClosed, RoomError
from clients.sdk.models import (
    JSON,
    BoardPage,
    Challenge,
    DrillPublic,
    Pairing,
    Pairings,
    Progress,
    RunnerPublic,
    RunPublic,
    ShareLink,
    Watch,
)
from clients.sdk.protocol import TOKEN_REJECTED
from clients.sdk.room import RoomConnection

API = "/api/v1"


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
        club_id: str | None = None,
        course: Sequence[tuple[float, float]] | None = None,
        tolerance_m: float = 25.0,
        cutoff_s: float | None = None,
        auto_start: bool = False,
    ) -> JSON:
        """Schedule a race (moderators; a club's owner and admins for `club_id`). You organise
        it. `scheduled_at` must be time-zone aware; a members-only race (`open=False`) needs a
        `club_id`. `course`: the line to follow as (lat, lon) points, at least `distance_m`
        long, within `tolerance_m` of it (none: a free route); `cutoff_s`: seconds from the gun
        after which the race closes (none: the server's default); `auto_start`: the countdown
        starts by itself, for a gun at `scheduled_at`."""
        if scheduled_at.tzinfo is None:
            raise ValueError("scheduled_at needs a time zone (the API refuses naive times)")
        body: JSON = {
            "title": title,
            "distance_m": distance_m,
            "scheduled_at": scheduled_at.isoformat(),
            "capacity": capacity,
            "open": open,
        }
        if club_id is not None:
            body["club_id"] = club_id
        if course is not None:
            body["course"] = {"line": [list(p) for p in course], "tolerance_m": tolerance_m}
        if cutoff_s is not None:
            body["cutoff_s"] = cutoff_s
        if auto_start:
            body["auto_start"] = True
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

    async def edit_race(self, race_id: str, **changes: Any) -> JSON:
        """Change a race before its countdown (its organisers, moderators): any of `title`,
        `scheduled_at` (a time-zone aware datetime), `capacity`, `cutoff_s`, `auto_start`."""
        body = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in changes.items()}
        path = f"{API}/races/{_seg(race_id)}"
        return cast(JSON, await self._request("PATCH", path, json_body=body))

    async def cancel_race(self, race_id: str, reason: str) -> JSON:
        """Call a race off (its organisers, moderators): the race, now `aborted`."""
        path = f"{API}/races/{_seg(race_id)}/cancel"
        return cast(JSON, await self._request("POST", path, json_body={"reason": reason}))

    async def disqualify_runner(self, race_id: str, runner_id: str, reason: str) -> JSON:
        """Disqualify a runner, also after the results (its organisers, moderators): the
        results, re-ranked."""
        path = f"{API}/races/{_seg(race_id)}/disqualify"
        body = {"runner_id": runner_id, "reason": reason}
        return cast(JSON, await self._request("POST", path, json_body=body))

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
