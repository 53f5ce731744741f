"""Authorisation matrix over room frames: every client frame kind of the race room and of the drill
room x {anonymous, invalid token, runner A (registered), runner B (not registered), admin of
another club, admin of the event's club (its organiser / coach), moderator, admin, banned}.

Each cell runs on a real server against a fresh race or drill, so a cell that is let in (pause,
abort, an alert cancelled) cannot change what the next one sees. Only the allowed cells succeed;
every refused cell gets the documented `error` code (its `ref` is the frame's `cid`) or close code,
and the socket keeps working after a refusal that the protocol says leaves it open.

The table must list every client frame kind `server.rooms.protocol` decodes (control actions one
by one): a new frame kind fails `test_the_table_covers_every_client_frame_kind` until it has a row.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from game import clubs, drills, races
from game import drill_sessions as ds
from game.safety import AlertRaised
from server.commands import execute
from server.rooms import protocol
from server.store.db import create_engine
from server.store.event_store import EventStore, NewEvent
from tests.rooms.conftest import LiveServer, World, recv

ROLES = (
    "anon",  # no auth frame: the probe frame comes first
    "anon_invalid",  # auth with a token that is not one
    "runner_a",  # registered for the race
    "runner_b",  # not registered
    "other_admin",  # owner of another club
    "club_admin",  # owner of the event's club: the race's organiser, the drill's coach
    "moderator",
    "admin",
    "banned",
)
STAFF = ("club_admin", "moderator", "admin")
SIGNED_IN = ("runner_a", "runner_b", "other_admin", "club_admin", "moderator", "admin")
PROBE = "probe"

# outcomes


@dataclass(frozen=True)
class Ok:
    """Let in: the frame's answer (`what`) arrives; `closes` when the room ends (4504) after it."""

    what: str
    closes: bool = False


@dataclass(frozen=True)
class Silent:
    """Let in without an answer to the sender (`ready`): no error before a later fence frame."""


@dataclass(frozen=True)
class Refused:
    """An `error` with this code and `ref` = the probe's cid; the socket stays open."""

    code: str


@dataclass(frozen=True)
class Closed:
    """An `error` with this code, then the socket is closed with `close`."""

    code: str
    close: int


Outcome = Ok | Silent | Refused | Closed


def row(allowed: Outcome, refused: Outcome, who: tuple[str, ...] = ()) -> dict[str, Outcome]:
    """Signed-in roles in `who` get `allowed`, the other signed-in roles `refused`."""
    return {r: allowed if r in who else refused for r in SIGNED_IN}


def everyone(outcome: Outcome) -> dict[str, Outcome]:
    return row(outcome, outcome)


RUNNER_A = ("runner_a",)
#: Frames the table sends, by kind (`control:<action>` per action); `cid` is added.
FRAMES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "auth": lambda ctx: {"type": "auth", "token": ctx["token"] or "x"},
    "ping": lambda ctx: {"type": "ping", "t0": time.time()},
    "ready": lambda ctx: {"type": "ready"},
    "retire": lambda ctx: {"type": "retire"},
    "gps": lambda ctx: {
        "type": "gps",
        "seq": 1,
        "t": time.time(),
        "lat": 52.5,
        "lon": 13.4,
        "acc": 5.0,
    },
    "resume": lambda ctx: {"type": "resume", "after_seq": 0, "epoch": "another-epoch"},
    "control:start": lambda ctx: {"type": "control", "action": "start", "countdown_s": 30},
    "control:pause": lambda ctx: {"type": "control", "action": "pause"},
    "control:resume": lambda ctx: {"type": "control", "action": "resume"},
    "control:abort": lambda ctx: {"type": "control", "action": "abort", "reason": "storm"},
    "control:disqualify": lambda ctx: {
        "type": "control",
        "action": "disqualify",
        "runner_id": ctx["runner_a"],
        "reason": "cut the course",
    },
    "control:close": lambda ctx: {"type": "control", "action": "close"},
    "ack": lambda ctx: {"type": "ack", "cue": 1, "t": time.time()},
    "sync": lambda ctx: _sync(),
    "alert_ack": lambda ctx: {"type": "alert_ack", "id": ctx["alert"]},
    "alert_cancel": lambda ctx: {"type": "alert_cancel", "id": ctx["alert"]},
}


def _sync() -> dict[str, Any]:
    t = time.time()
    return {"type": "sync", "t0": t - 0.02, "t1": t - 0.015, "t2": t - 0.01, "t3": t - 0.005}


#: Race rooms: a running race (the gun 5 s ago) organised by `club_admin` for its club, runner A
#: registered, an open alert of runner A's. `control start` runs on a scheduled race instead.
RACE: dict[str, dict[str, Outcome]] = {
    "auth": everyone(Refused("already_authenticated")),
    "ping": everyone(Ok("pong")),
    "ready": row(Silent(), Refused("not_registered"), RUNNER_A),
    "retire": row(Ok("retired"), Refused("not_registered"), RUNNER_A),
    "gps": row(Ok("ack"), Refused("not_registered"), RUNNER_A),
    "resume": everyone(Ok("welcome")),
    "control:start": row(Ok("countdown"), Refused("forbidden"), STAFF),
    "control:pause": row(Ok("paused"), Refused("forbidden"), STAFF),
    "control:resume": row(Refused("bad_race_state"), Refused("forbidden"), STAFF),
    "control:abort": row(Ok("aborted", closes=True), Refused("forbidden"), STAFF),
    "control:disqualify": row(Ok("disqualified"), Refused("forbidden"), STAFF),
    "control:close": row(Ok("closed", closes=True), Refused("forbidden"), STAFF),
    "ack": everyone(Refused("unknown_type")),  # a drill frame
    "sync": everyone(Refused("unknown_type")),  # a drill frame
    # runner A's alert: only A cancels it; only controllers (or A's spotters) acknowledge it
    "alert_ack": row(Ok("alert_acked"), Refused("forbidden"), STAFF),
    "alert_cancel": row(Ok("alert_cancelled"), Refused("forbidden"), RUNNER_A),
}
#: Drill rooms: a scheduled club drill whose coach is `club_admin`.
DRILL: dict[str, dict[str, Outcome]] = {
    "auth": everyone(Refused("already_authenticated")),
    "ping": everyone(Ok("pong")),
    "ready": everyone(Refused("unsupported")),
    "retire": everyone(Refused("unsupported")),
    "gps": everyone(Refused("unsupported")),
    "resume": everyone(Ok("welcome")),
    "control:start": row(Ok("started"), Refused("forbidden"), STAFF),
    "control:pause": everyone(Refused("unsupported")),
    "control:resume": everyone(Refused("unsupported")),
    "control:abort": everyone(Refused("unsupported")),
    "control:disqualify": everyone(Refused("unsupported")),
    # let in, then refused by the drill's rules: it has not started
    "control:close": row(Refused("bad_drill_state"), Refused("forbidden"), STAFF),
    # acks need a running drill: `test_drill_acks_come_from_participants_only`
    "ack": row(Ok("ack"), Refused("forbidden"), ("runner_a", "runner_b", "other_admin")),
    "sync": everyone(Ok("clock")),
    "alert_ack": everyone(Refused("unsupported")),
    "alert_cancel": everyone(Refused("unsupported")),
}
TABLES = {"race": RACE, "drill": DRILL}


def expected(room: str, kind: str, role: str) -> Outcome:
    if role == "anon":  # the first frame must be auth
        return (
            Closed("not_authenticated", 1008) if kind != "auth" else Closed("invalid_token", 4401)
        )
    if role == "anon_invalid":
        return Closed("invalid_token", 4401)
    if role == "banned":
        return Closed("banned", 4503)
    return TABLES[room][kind][role]


def _client_frame_kinds() -> set[str]:
    """Every frame kind the protocol decodes, control actions one by one."""
    kinds = {k for k in protocol.FRAME_TYPES if k != "control"}
    union = typing.get_args(typing.get_args(protocol.ControlFrame)[0])
    for model in union:
        (action,) = typing.get_args(model.model_fields["action"].annotation)
        kinds.add(f"control:{action}")
    frame_union = typing.get_args(typing.get_args(protocol.ClientFrame)[0])
    decoded = set()
    for model in frame_union:
        if typing.get_origin(model) is typing.Annotated:  # the control union
            decoded.add("control")
            continue
        (name,) = typing.get_args(model.model_fields["type"].annotation)
        decoded.add(name)
    assert decoded == set(protocol.FRAME_TYPES)
    return kinds


def test_the_table_covers_every_client_frame_kind() -> None:
    kinds = _client_frame_kinds()
    for name, table in TABLES.items():
        assert set(table) == kinds, name
        for kind, cells in table.items():
            assert set(cells) == set(SIGNED_IN), (name, kind)
    assert set(FRAMES) == kinds


# the world


@dataclass
class Actors:
    ids: dict[str, str]
    tokens: dict[str, str]
    club: str


@pytest.fixture(scope="module")
def actors(live: LiveServer) -> Actors:
    world = World(live.settings)

    async def make() -> Actors:
        ids: dict[str, str] = {}
        for role in ("runner_a", "runner_b", "other_admin", "club_admin"):
            (ids[role],) = await world.users(1)
        (ids["moderator"],) = await world.users(1, "moderator")
        (ids["admin"],) = await world.users(1, "admin")
        (ids["banned"],) = await world.users(1, banned=True)
        club, other = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
        await _do(
            world, f"club-{club}", clubs, clubs.CreateClub(club, "Matrix", ids["club_admin"], "C1")
        )
        await _do(
            world,
            f"club-{other}",
            clubs,
            clubs.CreateClub(other, "Other", ids["other_admin"], "C2"),
        )
        return Actors(ids, dict(world.tokens), club)

    return asyncio.run(make())


async def _do(
    world: World, stream: str, decider: Any, command: Any, now: datetime | None = None
) -> None:
    engine = create_engine(world.settings.database_url)
    try:
        await execute(EventStore(engine), stream, decider, command, now=now)
    finally:
        await engine.dispose()


async def new_race(
    world: World, a: Actors, *, running: bool, also: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A club race with runner A registered (and, when running, an open alert of A's)."""
    race_id, stream = str(uuid.uuid4()), ""
    stream = f"race-{race_id}"
    when = datetime.now(UTC) + timedelta(hours=1)
    cmd = races.ScheduleRace(race_id, "Matrix race", 800.0, when, 10, a.ids["club_admin"], a.club)
    await _do(world, stream, races, cmd)
    for runner in (a.ids["runner_a"], *also):
        await _do(world, stream, races, races.Register(runner))
    ctx = {"room": race_id, "alert": "no-alert", "runner_a": a.ids["runner_a"]}
    if running:
        gun = time.time() - 5.0
        start = races.StartCountdown(a.ids["club_admin"], 3.0)
        await _do(world, stream, races, start, datetime.fromtimestamp(gun - 3.0, UTC))
        alert = secrets.token_hex(6)
        now = time.time()
        raised = AlertRaised(
            f"race:{race_id}", alert, a.ids["runner_a"], "fall", now, now + 600, {}
        )
        engine = create_engine(world.settings.database_url)
        try:
            await EventStore(engine).append(f"safety-{race_id}", 0, [NewEvent.of(raised)])
        finally:
            await engine.dispose()
        ctx["alert"] = alert
    return ctx


def _template() -> drills.Template:
    phase = drills.Phase(drills.Move.SWITCH_REACTION, 30.0)
    return drills.compose("matrix", "Matrix drill", drills.Level.BEGINNER, [phase])


async def new_drill(world: World, a: Actors) -> dict[str, Any]:
    drill_id = f"drill-{uuid.uuid4().hex[:16]}"
    cmd = ds.ScheduleDrill(drill_id, _template(), a.ids["club_admin"], a.club)
    await _do(world, f"drill-{drill_id}", ds, cmd)
    return {"room": drill_id, "alert": "no-alert", "runner_a": a.ids["runner_a"]}


# playing one cell


async def _frames_until(
    ws: ClientConnection, pred: Callable[[dict[str, Any]], bool], timeout: float = 15.0
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws, timeout)
            seen.append(frame)
            if pred(frame):
                return seen


def _mine(frame: dict[str, Any], cid: str = PROBE) -> bool:
    return frame["type"] == "error" and frame.get("ref") == cid


def _answer(what: str) -> Callable[[dict[str, Any]], bool]:
    """The frame that shows a let-in probe took effect."""
    return lambda f: f["type"] == what or f.get("event") == what or _mine(f)


async def _alive(ws: ClientConnection) -> None:
    """The socket still works: a ping is answered."""
    await ws.send(orjson.dumps({"type": "ping", "t0": time.time(), "cid": "alive"}).decode())
    await _frames_until(ws, lambda f: f["type"] == "pong" and f.get("cid") == "alive")


async def _closed_with(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(15):
            while True:
                await ws.recv()
    return ws.close_code


async def play(
    srv: LiveServer, room: str, kind: str, role: str, token: str | None, ctx: dict[str, Any]
) -> None:
    outcome = expected(room, kind, role)
    frame = {**FRAMES[kind]({**ctx, "token": token}), "cid": PROBE}
    async with connect(f"{srv.ws_url}/{ctx['room']}", compression=None) as ws:
        if role != "anon":
            await ws.send(orjson.dumps({"type": "auth", "token": token or "not-a-token"}).decode())
            if not isinstance(outcome, Closed):
                welcome = await recv(ws)
                assert welcome["type"] == "welcome", welcome
        if isinstance(outcome, Closed):
            if role == "anon":
                await ws.send(orjson.dumps(frame).decode())
            error = await recv(ws)
            assert (error["type"], error["code"]) == ("error", outcome.code), error
            assert await _closed_with(ws) == outcome.close
            return
        await ws.send(orjson.dumps(frame).decode())
        if isinstance(outcome, Refused):
            kind_ref = frame["type"]
            seen = await _frames_until(ws, lambda f: _mine(f) or _mine(f, kind_ref))
            assert seen[-1]["code"] == outcome.code, seen[-1]
            assert seen[-1]["ref"] == PROBE, f"the error does not echo the cid: {seen[-1]}"
            await _alive(ws)
        elif isinstance(outcome, Silent):  # a gps fence: acked only after the room took `ready`
            fence = {**FRAMES["gps"](ctx), "cid": "fence"}
            await ws.send(orjson.dumps(fence).decode())
            seen = await _frames_until(ws, lambda f: _mine(f) or f.get("cid") == "fence")
            assert not _mine(seen[-1]), seen[-1]
            assert seen[-1]["type"] == "ack", seen[-1]
        else:
            seen = await _frames_until(ws, _answer(outcome.what))
            assert not _mine(seen[-1]), seen[-1]
            if outcome.closes:
                assert await _closed_with(ws) == 4504
            else:
                await _alive(ws)


CELLS = [
    pytest.param(room, kind, role)
    for room in TABLES
    for kind in sorted(_client_frame_kinds())
    for role in ROLES
    if not (room == "drill" and kind == "ack" and role in SIGNED_IN)
]


@pytest.mark.parametrize(("room", "kind", "role"), CELLS)
async def test_a_room_frame_is_let_in_only_where_the_table_allows(
    live: LiveServer, actors: Actors, room: str, kind: str, role: str
) -> None:
    world = World(live.settings)
    if room == "race":
        # A disqualified last runner ends the race (4504); a second runner keeps it going.
        also = (str(uuid.uuid4()),) if kind == "control:disqualify" else ()
        ctx = await new_race(world, actors, running=kind != "control:start", also=also)
    else:
        ctx = await new_drill(world, actors)
    token = actors.tokens.get(actors.ids.get(role, ""))
    await play(live, room, kind, role, token, ctx)


# drill acks need a running drill with a cue that fired: one drill, every role at once


@pytest.mark.parametrize("role", SIGNED_IN)
async def test_drill_acks_come_from_participants_only(
    live: LiveServer, actors: Actors, role: str
) -> None:
    world = World(live.settings)
    ctx = await new_drill(world, actors)
    start = ds.StartDrill(actors.ids["club_admin"], 4.0, 7)
    await _do(world, f"drill-{ctx['room']}", ds, start)
    outcome = DRILL["ack"][role]
    async with connect(f"{live.ws_url}/{ctx['room']}", compression=None) as ws:
        token = actors.tokens[actors.ids[role]]
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        welcome = await recv(ws)
        assert welcome["type"] == "welcome", welcome
        for i in range(3):
            await ws.send(orjson.dumps({**_sync(), "cid": f"s{i}"}).decode())
            await _frames_until(ws, lambda f, i=i: f.get("cid") == f"s{i}")
        cue = next(iter(c for c in welcome["snapshot"]["cues"] if c["scored"]), None)
        if cue is None:
            cue = (await _frames_until(ws, lambda f: f["type"] == "cue" and f["scored"]))[-1]
        tap = cue["at"] + 0.25
        await asyncio.sleep(max(0.0, tap + 0.05 - time.time()))
        await ws.send(
            orjson.dumps({"type": "ack", "cue": cue["id"], "t": tap, "cid": PROBE}).decode()
        )
        seen = await _frames_until(
            ws, lambda f: (f["type"] == "ack" and f.get("cid") == PROBE) or _mine(f)
        )
        if isinstance(outcome, Refused):
            assert _mine(seen[-1]) and seen[-1]["code"] == outcome.code, seen[-1]
        else:
            assert seen[-1]["type"] == "ack" and seen[-1]["reaction_ms"] is not None, seen[-1]


# a ban while connected


async def test_a_runner_banned_while_connected_can_no_longer_send_fixes(
    live: LiveServer, actors: Actors
) -> None:
    world = World(live.settings)
    (runner,) = await world.users(1)
    ctx = await new_race(world, actors, running=True, also=(runner,))
    async with connect(f"{live.ws_url}/{ctx['room']}", compression=None) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": world.tokens[runner]}).decode())
        assert (await recv(ws))["type"] == "welcome"
        async with httpx.AsyncClient(base_url=live.http_url) as http:
            moderator = actors.tokens[actors.ids["moderator"]]
            banned = await http.post(
                f"/api/v1/moderation/runners/{runner}/ban",
                json={"reason": "spoofed GPS"},
                headers={"Authorization": f"Bearer {moderator}"},
            )
        assert banned.status_code == 200, banned.text
        fix = {**FRAMES["gps"](ctx), "cid": PROBE}
        try:
            await ws.send(orjson.dumps(fix).decode())
            seen = await _frames_until(ws, lambda f: f.get("cid") == PROBE or _mine(f))
        except ConnectionClosed:
            assert ws.close_code == 4503
            return
        assert _mine(seen[-1]) and seen[-1]["code"] == "banned", seen[-1]
