"""The room runtime of one race: authoritative live state on the server.

Gather, decide, append, publish. The room folds the race stream (`game.races.evolve`), feeds fixes
to the pure `RaceLive` engine, turns its outcomes into race commands, and broadcasts the events
once committed. Input is handled by one task (in memory, never waiting on the database); every
write goes through one writer task, so the room is the stream's only writer while it runs and
appends at the version it holds (it catches up on a conflict, e.g. a registration made through the
API). Fixes are buffered per runner and stored every second (or 50 fixes) in one transaction
(chunk rows + one `FixesBatchStored` event); a fix is acked only after that commit, so an acked fix
survives a crash, and a restarted room rebuilds `RaceLive` from the stored chunks.

Safety (docs/protocol.md, "Spotters and safety alerts"): a `FallDetector` per runner and the live
pace check's `no_progress` raise alerts (`game.safety`), sent at once to the runner, their
spotters' sockets and the moderators, then appended to the `safety-<race id>` stream by the
writer task: an alert is not held back by a slow database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter
from typing import Any

import orjson
from sqlalchemy import insert, select

from game import clubs as club_decider
from game import races
from game import safety as game_safety
from game.errors import DomainError
from game.events import fold, from_data
from game.pace import Activity, Verdict, policy_for
from game.track import Fix
from server.rooms import frames
from server.rooms.backplane import fence_token
from server.rooms.backplane.base import Backplane, Inbound, Outbound
from server.rooms.common import (
    CONTROLLER_ROLES,
    FLUSH,
    ROOM_OVER,
    Broadcasts,
    WriteQueue,
    handle_inbox,
    to_connection,
)
from server.rooms.protocol import (
    AlertAckFrame,
    AlertCancelFrame,
    ControlAbort,
    ControlClose,
    ControlDisqualify,
    ControlPause,
    ControlResume,
    ControlStart,
    GpsFrame,
    ReadyFrame,
    ResumeFrame,
    RetireFrame,
    encode,
    error,
)
from server.store.db import DATABASE_UNAVAILABLE, writer
from server.store.event_store import ConcurrencyError, EventStore, NewEvent
from server.store.read_models import RaceFixChunkRow
from server.store.tables import Runner
from server.tracks import decode_track, encode_fixes

log = logging.getLogger(__name__)
CHUNKS = RaceFixChunkRow.__table__  # type: ignore[attr-defined]
RUNNERS = Runner.__table__  # type: ignore[attr-defined]

FLUSH_S = 1.0
FLUSH_FIXES = 50
FLAGS_KEPT = 200
SAFETY_TICK_S = 1.0
CATCH_UP_S = 2.0
MAX_ATTEMPTS = 5
SYSTEM = "room"
_LIVE = (races.RaceStatus.COUNTDOWN, races.RaceStatus.RUNNING, races.RaceStatus.PAUSED)


class RoomNotFound(LookupError):
    """No race with that id."""


@dataclass(slots=True)
class _Feed:
    """One runner's fixes in this room."""

    applied_seq: int = 0  # highest seq fed to the engine
    durable_seq: int = 0  # highest seq committed (acked)
    next_chunk: int = 0
    buffer: list[tuple[int, Fix, str | None]] = field(default_factory=list)
    echo: float | None = None


@dataclass(slots=True)
class _Job:
    commands: list[Any]
    actor: str
    conn_id: str | None = None
    cid: str | None = None


@dataclass(frozen=True, slots=True)
class _Verify:
    """A runner crossed the line: the writer runs their verdict, then commits the finish."""

    crossing: races.Crossing


@dataclass(slots=True)
class _SafetyAppend:
    """Safety events already decided and sent, for the writer to store."""

    events: list[game_safety.SafetyEvent]


@dataclass(frozen=True, slots=True)
class _Spotter:
    """A socket that spots runners of this race."""

    runners: tuple[str, ...]
    moderator: bool


_CATCH_UP = "catch-up"


class Room:
    """The live room of race `race_id` (owned by this process)."""

    def __init__(
        self,
        race_id: str,
        store: EventStore,
        backplane: Backplane,
        *,
        tick_hz: float = 1.0,
        clock: Callable[[], float] = time.time,
        safety: game_safety.SafetyPolicy | None = None,
    ) -> None:
        self.race_id = race_id
        self.stream_id = f"race-{race_id}"
        self.store = store
        self.backplane = backplane
        self.tick_s = 1.0 / tick_hz
        self.clock = clock
        self.out = Broadcasts(race_id, backplane)
        self.state = races.initial_state()
        self.version = 0
        #: The lease token appends are stamped with (None: in-process backplane, no fencing).
        self.fence: int | None = None
        self.live: races.RaceLive | None = None
        self.feeds: dict[str, _Feed] = {}
        self.flags: deque[dict[str, Any]] = deque(maxlen=FLAGS_KEPT)
        self._flag_id = 0
        self._flagged: set[tuple[str, str]] = set()
        self.ready: set[str] = set()
        self.safety_policy = safety or game_safety.SafetyPolicy()
        self.safety_stream = f"safety-{race_id}"
        self.safety_state = game_safety.initial_state(f"race:{race_id}")
        self.safety_version = 0
        self.falls: dict[str, game_safety.FallDetector] = {}
        self.spotters: dict[str, _Spotter] = {}  # conn id -> what it spots
        self.positions: dict[str, dict[str, Any]] = {}  # runner -> last fix (memory only)
        self.names: dict[str, str] = {}  # registered runner -> handle (the leaders' rows)
        #: A club race: the club's owner and admins run it too (as they were when it opened).
        self.club_admins: frozenset[str] = frozenset()
        self._inbox: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=10_000)
        self.writes = WriteQueue(f"room {race_id}", FLUSH_S, self._write, self._flush)
        self._dirty = False
        self._tick = 0
        self._last_standings: Outbound | None = None
        self._closing_requested = False
        self._tasks: list[asyncio.Task[None]] = []
        self.idle_since = time.monotonic()

    # lifecycle

    async def open(self) -> None:
        """Load the race (raises `RoomNotFound`) and claim it (a `RuntimeError` when another
        process owns it: the registry then follows the loaded room). Owned: fence its streams
        with the lease token, rebuild the live state and start the room's tasks."""
        await self._load()
        if not await self.backplane.claim(self.race_id, self._inbox.put):
            raise RuntimeError(f"room {self.race_id} is owned elsewhere")
        try:
            self.fence = fence_token(self.backplane, self.race_id)
            if self.fence is not None:
                # from here a previous owner whose lease lapsed can append nothing more; what
                # it appended before is in the log: load again
                for stream in (self.stream_id, self.safety_stream):
                    await self.store.raise_fence(stream, self.fence)
                await self._load()
            await self._load_names(self.state.registered)
            await self._rebuild()
            await self._announce_unsent()
        except BaseException:
            await self.backplane.release(self.race_id)
            raise
        self._tasks = [
            asyncio.create_task(
                handle_inbox(f"room {self.race_id}", self._inbox, self._handle),
                name=f"room-in-{self.race_id}",
            ),
            asyncio.create_task(self._ticker(), name=f"room-tick-{self.race_id}"),
            self.writes.start(),
        ]

    async def _load(self) -> None:
        recorded = await self.store.load(self.stream_id)
        self.state = fold(
            races.evolve, races.initial_state(), (from_data(e.type, e.data) for e in recorded)
        )
        self.version = recorded[-1].version if recorded else 0
        if self.state.status == races.RaceStatus.NONE:
            raise RoomNotFound(self.race_id)
        if self.state.club_id is not None:
            club = fold(
                club_decider.evolve,
                club_decider.initial_state(),
                (
                    from_data(e.type, e.data)
                    for e in await self.store.load(f"club-{self.state.club_id}")
                ),
            )
            self.club_admins = frozenset(r for r in club.roles if club.is_admin(r))
        alerts = await self.store.load(self.safety_stream)
        self.safety_state = fold(
            game_safety.evolve,
            game_safety.initial_state(f"race:{self.race_id}"),
            (from_data(e.type, e.data) for e in alerts),
        )
        self.safety_version = alerts[-1].version if alerts else 0

    async def close(self, code: int = 1012) -> None:
        """Store what is buffered, close the sockets with `code`, stop."""
        if not self._tasks:
            return
        *others, _writer = self._tasks
        for task in others:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.writes.stop()
        await self.out.close(code)
        await self.backplane.release(self.race_id)

    @property
    def over(self) -> bool:
        """The race finished or was aborted."""
        return self.state.status in (races.RaceStatus.FINISHED, races.RaceStatus.ABORTED)

    def is_controller(self, runner_id: str, role: str) -> bool:
        return (
            role in CONTROLLER_ROLES
            or runner_id == self.state.organiser_id
            or runner_id in self.club_admins
        )

    @property
    def busy(self) -> bool:
        """Live, or holding fixes not yet stored: not to be evicted."""
        live = races.status_at(self.state, self.clock()) in _LIVE
        return live or any(f.buffer for f in self.feeds.values()) or bool(self.writes)

    async def _rebuild(self) -> None:
        """Rebuild `RaceLive` from the stored fix chunks (a restart mid-race resumes)."""
        st = self.state
        if st.start_at is None:
            return
        live = self.live = self._new_live()
        stmt = (
            select(CHUNKS)
            .where(CHUNKS.c.race_id == self.race_id)
            .order_by(CHUNKS.c.runner_id, CHUNKS.c.chunk)
        )
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        now = self.clock()
        for runner_id, chunks in groupby(rows, key=attrgetter("runner_id")):
            stored: list[Fix] = []  # this runner's fixes, for a verdict at their crossing
            feed = self.feeds.setdefault(runner_id, _Feed())
            for row in chunks:
                feed.applied_seq = feed.durable_seq = max(feed.durable_seq, row.last_seq)
                feed.next_chunk = max(feed.next_chunk, row.chunk + 1)
                track = await asyncio.to_thread(decode_track, row.data)
                for fix in track.fixes():
                    stored.append(fix)
                    crossing = live.add_fix(runner_id, fix, max(now, fix.t)).crossing
                    if crossing is not None:
                        verdict = await asyncio.to_thread(live.verdict_from, crossing, stored)
                        finish = live.finish(crossing, verdict)
                        if runner_id not in st.finished:
                            self._enqueue(_Job([finish], SYSTEM))
        self._dirty = True

    async def _load_names(self, runner_ids: Sequence[str]) -> None:
        """The handles of `runner_ids` (accounts, not the event log: a deleted account's handle
        goes with it)."""
        missing = [r for r in runner_ids if r not in self.names]
        if not missing:
            return
        stmt = select(RUNNERS.c.id, RUNNERS.c.handle).where(RUNNERS.c.id.in_(missing))
        async with self.store.engine.connect() as conn:
            self.names.update({row.id: row.handle for row in await conn.execute(stmt)})

    def _new_live(self) -> races.RaceLive:
        st = self.state
        assert st.start_at is not None
        pace = replace(policy_for(Activity.RACE), no_progress_s=self.safety_policy.no_progress_s)
        # the room's fixes are `stored_fix`es (their extras are float32 already), and stored:
        # the engine keeps none of them, a finish's verdict runs on the stored ones (`_verify`)
        # course, pauses, and the runners disqualified (e.g. in the lobby) or retired, as they stand
        return races.RaceLive.of(st, pace, float32_extras=True, keep_fixes=False)

    # output

    async def _publish(self, out: Outbound) -> None:
        await self.out.publish(out)

    async def _direct(self, conn_id: str, text: str) -> None:
        await self.out.direct(conn_id, text)

    async def _refuse(self, msg: Inbound, code: str, message: str, cid: str | None) -> None:
        ref = cid or (msg.frame.type if msg.frame is not None else None)
        await self.out.refuse(msg.conn_id, code, message, ref)

    async def _flag(self, runner_id: str, flag: Any, now: float) -> None:
        self._flag_id += 1
        frame = frames.flag_frame(self._flag_id, runner_id, flag, now)
        self.flags.append(frame)
        await self._publish(Outbound("direct", encode(frame), audience="moderators"))

    def _welcome(
        self,
        runner_id: str,
        role: str,
        moderator: bool,
        now: float,
        spotting: tuple[str, ...] = (),
    ) -> Outbound:
        st = self.state
        snapshot: dict[str, Any] = {"race": frames.race_summary(st, now), "results": None}
        if st.results:
            snapshot["results"] = list(st.results)
        standings = self.live.ranking(st.registered) if self.live is not None else []
        snapshot["leaders"] = [
            frames.ranked_row(s, self.names) for s in standings[: frames.LEADERS]
        ]
        snapshot["count"] = len(standings)
        mine = next((s for s in standings if s[1] == runner_id), None)
        snapshot["you"] = self._personal_row(mine) if mine is not None else None
        if moderator:
            snapshot["flags"] = list(self.flags)
            snapshot["ready"] = sorted(self.ready)
        feed = self.feeds.get(runner_id)
        registered = runner_id in st.registered_set
        if spotting:
            rows = {s[1]: s for s in standings}
            snapshot["spotted"] = [
                self._personal_row(rows[r], set(spotting)) for r in spotting if r in rows
            ]
        if registered or moderator or spotting:
            snapshot["alerts"] = [
                frames.alert_frame(a, self.positions.get(a.runner_id))
                for a in self.safety_state.open_alerts()
                if moderator or a.runner_id == runner_id or a.runner_id in spotting
            ]
        if registered:
            kind = "runner"
        elif moderator:
            kind = "moderator"
        else:
            kind = "spotter" if spotting else "spectator"
        frame = {
            "type": "welcome",
            "room": self.race_id,
            "role": kind,
            "spotting": list(spotting),
            "you": runner_id,
            "control": moderator,
            "acked_seq": feed.durable_seq if feed is not None else 0,
            "snapshot": snapshot,
            "seq": self.out.seq,
            "epoch": self.out.epoch,
            "server_time": round(now, 6),
        }
        return Outbound("welcome", encode(frame), seq=self.out.seq)

    def _personal_row(
        self, s: races.StandingRow, spotted: set[str] | frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        row = frames.ranked_row(s)
        feed = self.feeds.get(s[1])
        row["echo"] = feed.echo if feed is not None else None
        if s[1] in spotted:
            row["position"] = self.positions.get(s[1])
        return row

    def _spotted(self) -> set[str]:
        """Runners with a spotter in the room (their rows carry their last position)."""
        return {r for sp in self.spotters.values() for r in sp.runners}

    # input

    async def _handle(self, msg: Inbound) -> None:
        now = self.clock()
        if msg.kind == "join":
            moderator = bool(msg.extra.get("moderator"))
            spotting = self._spotting(msg)
            if spotting:
                self.spotters[msg.conn_id] = _Spotter(spotting, moderator)
            out = self._welcome(msg.runner_id, msg.role, moderator, now, spotting)
            await self._publish(to_connection(out, msg.conn_id))
            if self.over:  # the results are in the welcome; the room is closed for good
                await self.out.close(ROOM_OVER, msg.conn_id)
            return
        if msg.kind == "leave":
            self.spotters.pop(msg.conn_id, None)
            return
        frame = msg.frame
        match frame:
            case GpsFrame():
                await self._gps(msg, frame, now)
            case ReadyFrame():
                if msg.runner_id not in self.state.registered_set:
                    await self._refuse(
                        msg, "not_registered", "register for the race first", frame.cid
                    )
                    return
                self.ready.add(msg.runner_id)
                ready = {"type": "event", "event": "ready", "runner_id": msg.runner_id}
                await self._publish(Outbound("direct", encode(ready), audience="moderators"))
            case RetireFrame():
                if msg.runner_id not in self.state.registered_set:
                    await self._refuse(msg, "not_registered", "you are not in this race", frame.cid)
                    return
                self._enqueue(
                    _Job([races.Retire(msg.runner_id)], msg.runner_id, msg.conn_id, frame.cid)
                )
            case ResumeFrame():
                await self._resume(msg, frame, now)
            case AlertAckFrame():
                await self._alert_ack(msg, frame, now)
            case AlertCancelFrame():
                command = game_safety.CancelAlert(frame.id, msg.runner_id)
                await self._safety_do(command, now, msg, frame.cid)
            case (
                ControlStart()
                | ControlPause()
                | ControlResume()
                | ControlAbort()
                | ControlDisqualify()
                | ControlClose()
            ):
                if not self.is_controller(msg.runner_id, msg.role):
                    await self._refuse(
                        msg,
                        "forbidden",
                        "only moderators and the organiser control a race",
                        frame.cid,
                    )
                    return
                command = _command(frame, msg.runner_id)
                self._enqueue(_Job([command], msg.runner_id, msg.conn_id, frame.cid))
            case _:
                cid = getattr(frame, "cid", None)
                await self._refuse(msg, "unknown_type", "not a race room frame", cid)

    async def _gps(self, msg: Inbound, frame: GpsFrame, now: float) -> None:
        st, runner_id = self.state, msg.runner_id
        if runner_id not in st.registered_set:
            await self._refuse(
                msg, "not_registered", "only registered runners send fixes", frame.cid
            )
            return
        if races.status_at(st, now) not in _LIVE or self.live is None:
            await self._refuse(msg, "race_not_live", "the race is not live", frame.cid)
            return
        if runner_id in st.disqualified:
            await self._refuse(msg, "disqualified", "you are disqualified", frame.cid)
            return
        if runner_id in st.retired:
            await self._refuse(msg, "retired", "you retired from the race", frame.cid)
            return
        feed = self.feeds.get(runner_id)
        if feed is None:
            feed = self.feeds[runner_id] = _Feed()
        if frame.seq <= feed.applied_seq:  # a resent fix: applied once, acked again
            if frame.seq <= feed.durable_seq:
                await self._ack(runner_id, frame.seq, frame.cid)
            return
        fix = frames.gps_fix(frame)  # as it will be stored: a replay after a restart agrees
        feed.applied_seq = frame.seq
        feed.buffer.append((frame.seq, fix, frame.cid))
        if frame.echo is not None:
            feed.echo = frame.echo
        outcome = self.live.add_fix(runner_id, fix, now)
        self._dirty = True
        crossing = outcome.crossing
        await self._watch_fall(runner_id, fix, crossing is not None, now)
        for flag in outcome.flags:  # hard fails, and the signs of a runner to watch
            if flag.hard_fail or flag.code in races.SUSPECT_CODES:
                self._flagged.add((runner_id, flag.code))
                await self._flag(runner_id, flag, now)
        if crossing is not None and runner_id not in st.finished:
            self._enqueue(_Verify(crossing))
        if len(feed.buffer) >= FLUSH_FIXES:
            self._enqueue(FLUSH)

    async def _ack(self, runner_id: str, seq: int, cid: str | None) -> None:
        frame: dict[str, Any] = {"type": "ack", "seq": seq}
        if cid is not None:
            frame["cid"] = cid
        await self._publish(Outbound("direct", encode(frame), audience="runner", to=runner_id))

    async def _resume(self, msg: Inbound, frame: ResumeFrame, now: float) -> None:
        if await self.out.replay(msg.conn_id, frame.after_seq, frame.epoch):
            if self._last_standings is not None:
                await self._publish(to_connection(self._last_standings, msg.conn_id))
        else:
            moderator = bool(msg.extra.get("moderator"))
            welcome = self._welcome(msg.runner_id, msg.role, moderator, now, self._spotting(msg))
            await self._publish(to_connection(welcome, msg.conn_id))
        if frame.after_flag is not None and bool(msg.extra.get("moderator")):
            for f in self.flags:
                if f["id"] > frame.after_flag:
                    await self._direct(msg.conn_id, encode(f))

    # ticking

    async def _ticker(self) -> None:
        next_safety = next_catch_up = next_tick = time.monotonic()
        while True:
            # a fixed rate: the work of a tick does not stretch the period
            next_tick = max(next_tick + self.tick_s, time.monotonic())
            await asyncio.sleep(next_tick - time.monotonic())
            try:
                now, mono = self.clock(), time.monotonic()
                if self._dirty and self.live is not None:
                    await self._standings(now)
                if mono >= next_safety:
                    next_safety = mono + SAFETY_TICK_S
                    await self._safety(now)
                    self._cutoff(now)
                if mono >= next_catch_up:
                    next_catch_up = mono + CATCH_UP_S
                    if await self.store.version(self.stream_id) > self.version:
                        self._enqueue(_CATCH_UP)
            except DATABASE_UNAVAILABLE as exc:  # an outage: the next tick tries again
                log.warning(
                    "room %s: tick: database unavailable (%s)", self.race_id, type(exc).__name__
                )
            except Exception:
                log.exception("room %s: tick failed", self.race_id)

    def _cutoff(self, now: float) -> None:
        """Past the cutoff (pauses excluded), the race closes by itself: the runners still out
        are DNF."""
        st = self.state
        at = races.cutoff_at(st, now)
        if (
            at is not None
            and now >= at
            and not self._closing_requested
            and races.status_at(st, now) == races.RaceStatus.RUNNING
        ):
            self._closing_requested = True
            log.info("room %s: cutoff reached, closing the race", self.race_id)
            self._enqueue(_Job([races.Close(SYSTEM)], SYSTEM))

    async def _standings(self, now: float) -> None:
        assert self.live is not None
        self._dirty = False
        self._tick += 1
        rows = self.live.ranking(self.state.registered)
        head = {
            "type": "standings",
            "epoch": self.out.epoch,
            "as_of_seq": self.out.seq,
            "tick": self._tick,
            "at": round(now, 3),
            "count": len(rows),
            "leaders": [frames.ranked_row(s, self.names) for s in rows[: frames.LEADERS]],
        }
        text = encode(head)[:-1]  # the closing brace comes with the per-runner part
        spotted = self._spotted()
        feeds, positions, dumps = self.feeds, self.positions, orjson.dumps
        personal: dict[str, str] = {}
        for rank, rid, distance_m, time_s, status in rows:  # inlined `_personal_row`
            feed = feeds.get(rid)
            row: dict[str, Any] = {
                "rank": rank,
                "runner_id": rid,
                "distance_m": distance_m,
                "time_s": time_s,
                "status": status,
                "echo": feed.echo if feed is not None else None,
            }
            if rid in spotted:
                row["position"] = positions.get(rid)
            personal[rid] = dumps(row).decode()
        out = Outbound("standings", text, seq=self.out.seq, personal=personal)
        self._last_standings = out
        await self._publish(out)

    async def _safety(self, now: float) -> None:
        for cmd in game_safety.due_escalations(self.safety_state, now, self.safety_policy):
            await self._safety_do(cmd, now)
        if self.live is None or races.status_at(self.state, now) != races.RaceStatus.RUNNING:
            return
        for runner_id, flags in self.live.tick(now).items():
            for flag in flags:
                await self._flag(runner_id, flag, now)
                if flag.code == "no_progress":
                    await self._raise(
                        runner_id, game_safety.AlertKind.NO_PROGRESS, flag.evidence, now
                    )
        for runner_id, detector in list(self.falls.items()):
            for signal in detector.tick(now):
                await self._raise(runner_id, signal.kind, signal.evidence, now)

    # safety alerts

    def _spotting(self, msg: Inbound) -> tuple[str, ...]:
        """The runners of this race the joining identity spots."""
        claimed = msg.extra.get("spotting") or ()
        registered = self.state.registered_set
        return tuple(r for r in claimed if r in registered and r != msg.runner_id)

    async def _watch_fall(self, runner_id: str, fix: Fix, finished: bool, now: float) -> None:
        """Feed the runner's fall detector while they race (not before the gun, not paused,
        not once finished or disqualified: slowing down after the line is no fall)."""
        st = self.state
        done = finished or runner_id in st.finished or runner_id in st.disqualified
        self.positions[runner_id] = {
            "lat": fix.lat,
            "lon": fix.lon,
            "acc": fix.acc_m,
            "t": fix.t,
        }
        if done:
            self.falls.pop(runner_id, None)
            return
        running = races.status_at(st, now) == races.RaceStatus.RUNNING
        if not running or st.start_at is None or fix.t < st.start_at:
            return
        detector = self.falls.get(runner_id)
        if detector is None:
            detector = self.falls[runner_id] = game_safety.FallDetector(self.safety_policy)
        for signal in detector.add(fix):
            await self._raise(runner_id, signal.kind, signal.evidence, now)

    async def _raise(self, runner_id: str, kind: str, evidence: Any, now: float) -> None:
        command = game_safety.RaiseAlert(
            secrets.token_hex(6),
            runner_id,
            str(kind),
            {k: v for k, v in dict(evidence).items() if isinstance(v, int | float | str)},
            self.safety_policy.cancel_window_s,
        )
        await self._safety_do(command, now)

    async def _alert_ack(self, msg: Inbound, frame: AlertAckFrame, now: float) -> None:
        alert = self.safety_state.alerts.get(frame.id)
        spotter = self.spotters.get(msg.conn_id)
        if alert is not None and spotter is not None and alert.runner_id in spotter.runners:
            role = "spotter"
        elif bool(msg.extra.get("moderator")):
            role = "moderator"
        elif alert is None:
            await self._refuse(msg, "unknown_alert", "no such alert", frame.cid)
            return
        else:
            await self._refuse(
                msg,
                "forbidden",
                "only the runner's spotters and the race's moderators acknowledge",
                frame.cid,
            )
            return
        await self._safety_do(
            game_safety.AcknowledgeAlert(frame.id, msg.runner_id, role), now, msg, frame.cid
        )

    async def _safety_do(
        self,
        command: game_safety.Command,
        now: float,
        msg: Inbound | None = None,
        cid: str | None = None,
    ) -> None:
        """Decide a safety command, send the frames at once, store the events after."""
        try:
            events = game_safety.decide(
                self.safety_state, command, datetime.fromtimestamp(now, UTC)
            )
        except DomainError as exc:
            if msg is not None:
                await self._refuse(msg, exc.code, exc.message, cid)
            return
        if not events:
            return
        self.safety_state = fold(game_safety.evolve, self.safety_state, events)
        self._enqueue(_SafetyAppend(events))
        for evt in events:
            alert = self.safety_state.alerts[evt.alert_id]
            frame = frames.safety_frame(evt, alert, self.positions.get(alert.runner_id))
            await self._to_safety_audience(alert.runner_id, encode(frame))

    async def _to_safety_audience(self, runner_id: str, text: str) -> None:
        """The runner, the moderators, and every socket spotting the runner (once each)."""
        await self._publish(Outbound("direct", text, audience="runner", to=runner_id))
        await self._publish(Outbound("direct", text, audience="moderators"))
        for conn_id, spotter in self.spotters.items():
            if runner_id in spotter.runners and not spotter.moderator:
                await self._direct(conn_id, text)

    async def _append_safety(self, events: list[game_safety.SafetyEvent]) -> None:
        for _attempt in range(MAX_ATTEMPTS):
            try:
                await self.store.append(
                    self.safety_stream,
                    self.safety_version,
                    [NewEvent.of(e) for e in events],
                    meta={"actor": SYSTEM},
                    fence=self.fence,
                )
            except ConcurrencyError:  # another process wrote (a takeover): append after it
                self.safety_version = await self.store.version(self.safety_stream)
                continue
            self.safety_version += len(events)
            self.store.notify_appended()
            return
        log.error("room %s: safety events not stored: %s", self.race_id, events)

    # writing

    def _enqueue(self, job: _Job | _SafetyAppend | _Verify | str) -> None:
        self.writes.put(job)

    async def _write(self, job: _Job | _SafetyAppend | _Verify | str) -> None:
        if job == FLUSH:
            await self._flush()
        elif job == _CATCH_UP:
            await self._catch_up()
        elif isinstance(job, _SafetyAppend):
            await self._append_safety(job.events)
        elif isinstance(job, _Verify):
            await self._verify(job.crossing)
        elif isinstance(job, _Job):
            await self._run(job)

    async def _run(self, job: _Job) -> None:
        try:
            await self._commit(job.commands, job.actor)
        except DomainError as exc:
            if job.conn_id is not None:
                await self._direct(job.conn_id, error(exc.code, exc.message, job.cid or "control"))
            else:
                log.info("room %s: %s refused: %s", self.race_id, job.commands, exc.code)

    async def _verify(self, crossing: races.Crossing) -> None:
        """A runner crossed the line: store what is buffered, read their fixes back, run the
        verdict on them (the batch check, in a thread), flag its hard fails, commit the finish.
        Retried as a whole by the writer if the database fails on the way."""
        live, runner_id = self.live, crossing.runner_id
        if live is None or runner_id in self.state.finished:
            return
        await self._flush()  # the fixes up to the line are stored first
        stmt = (
            select(CHUNKS.c.data)
            .where(CHUNKS.c.race_id == self.race_id, CHUNKS.c.runner_id == runner_id)
            .order_by(CHUNKS.c.chunk)
        )
        async with self.store.engine.connect() as conn:
            blobs = (await conn.execute(stmt)).scalars().all()

        def check() -> Verdict:
            fixes = [fix for blob in blobs for fix in decode_track(blob).fixes()]
            return live.verdict_from(crossing, fixes)

        try:
            verdict = await asyncio.to_thread(check)
        except races.FixesMissing as exc:  # never retried: it would hold up every ack behind it
            log.error(
                "room %s: no verdict for %s: fixes missing (%s)", self.race_id, runner_id, exc
            )
            if self.live is live:
                await self._flag(runner_id, exc.flag(), self.clock())
            return
        if self.live is not live:  # the race was restarted meanwhile: this crossing is void
            return
        finish = live.finish(crossing, verdict)
        now = self.clock()
        for flag in verdict.flags:
            if flag.hard_fail and (runner_id, flag.code) not in self._flagged:
                self._flagged.add((runner_id, flag.code))
                await self._flag(runner_id, flag, now)
        await self._run(_Job([finish], SYSTEM))

    async def _flush(self) -> None:
        """Store every buffered fix in one transaction, then ack each fix to its runner."""
        taken = [(rid, f, f.buffer) for rid, f in self.feeds.items() if f.buffer]
        if not taken:
            return
        for _rid, f, _items in taken:
            f.buffer = []

        def build() -> list[tuple[races.StoreFixes, dict[str, Any]]]:
            out = []
            for rid, f, items in taken:
                first, last = items[0][0], items[-1][0]
                row = {
                    "race_id": self.race_id,
                    "runner_id": rid,
                    "chunk": f.next_chunk,
                    "first_seq": first,
                    "last_seq": last,
                    "data": encode_fixes([fix for _seq, fix, _cid in items]),
                }
                out.append((races.StoreFixes(rid, f.next_chunk, first, last, len(items)), row))
            return out

        try:
            pairs = await asyncio.to_thread(build)
            stored = await self._commit_fixes(pairs)
        except BaseException:
            for _rid, f, items in taken:  # keep them for the next flush: nothing was acked
                f.buffer = items + f.buffer
            raise
        for rid, f, items in taken:
            if rid not in stored:
                continue
            f.next_chunk += 1
            f.durable_seq = max(f.durable_seq, items[-1][0])
            for seq, _fix, cid in items:
                await self._ack(rid, seq, cid)

    async def _commit_fixes(self, pairs: list[tuple[races.StoreFixes, dict[str, Any]]]) -> set[str]:
        """Append one `FixesBatchStored` and insert the chunks in one transaction; chunks of
        runners not registered (any more) are dropped."""
        for _attempt in range(MAX_ATTEMPTS):
            now = datetime.now(UTC)
            registered = self.state.registered_set
            kept = [(c, row) for c, row in pairs if c.runner_id in registered]
            batch = races.StoreFixesBatch(tuple(c for c, _row in kept))
            try:
                events = races.decide(self.state, batch, now)
            except DomainError:
                return set()
            if not events:
                return set()
            state = fold(races.evolve, self.state, events)
            rows = [row for _c, row in kept]
            stored = {c.runner_id for c, _row in kept}
            try:
                await self._append(events, SYSTEM, rows)
            except ConcurrencyError:
                await self._catch_up()
                continue
            await self._applied(events, state)
            return stored
        raise ConcurrencyError(self.stream_id, self.version, -1)

    async def _commit(self, commands: Sequence[Any], actor: str) -> None:
        for _attempt in range(MAX_ATTEMPTS):
            now = datetime.now(UTC)
            state, events = self.state, []
            for command in commands:
                new = races.decide(state, command, now)
                state = fold(races.evolve, state, new)
                events += new
            if not events:
                return
            try:
                await self._append(events, actor, [])
            except ConcurrencyError:
                await self._catch_up()
                continue
            await self._applied(events, state)
            return
        raise ConcurrencyError(self.stream_id, self.version, -1)

    async def _append(self, events: list[Any], actor: str, rows: list[dict[str, Any]]) -> None:
        async with self.store.engine.connect() as raw:
            conn = await writer(raw)
            async with conn.begin():
                if rows:
                    await conn.execute(insert(CHUNKS), rows)
                await self.store.append_in(
                    conn,
                    self.stream_id,
                    self.version,
                    [NewEvent.of(e) for e in events],
                    meta={"actor": actor},
                    fence=self.fence,
                )
        self.version += len(events)
        self.store.notify_appended()

    async def _catch_up(self) -> None:
        recorded = await self.store.load(self.stream_id, after_version=self.version)
        if not recorded:
            return
        events = [from_data(e.type, e.data) for e in recorded]
        self.version = recorded[-1].version
        await self._applied(events, fold(races.evolve, self.state, events))

    async def _announce(self, evt: Any, version: int, now: float) -> None:
        """Broadcast the frame of a committed event, if it has one."""
        frame = frames.event_frame(evt, now)
        if frame is None:
            return
        if isinstance(evt, races.RunnerRegistered):
            frame["handle"] = self.names.get(evt.runner_id)
        await self.out.broadcast(frame, version)
        self._dirty = True

    async def _announce_unsent(self) -> None:
        """A new owner continuing its predecessor's sequence: broadcast the events it committed
        and did not get to send (it stopped between the commit and the publish), so that a
        client resuming by `seq` misses none of them."""
        covered = self.out.covered
        if covered is None or covered >= self.version:
            return
        now = self.clock()
        for rec in await self.store.load(self.stream_id, after_version=covered):
            await self._announce(from_data(rec.type, rec.data), rec.version, now)

    async def _applied(self, events: list[Any], state: races.RaceState) -> None:
        """Committed: adopt the new state, drive the live engine, broadcast."""
        self.state = state
        joined = [e.runner_id for e in events if isinstance(e, races.RunnerRegistered)]
        if joined:
            with contextlib.suppress(Exception):  # names are for screens: never block a race
                await self._load_names(joined)
        now = self.clock()
        first = self.version - len(events) + 1  # the stream version of events[0]
        for version, evt in enumerate(events, first):
            if isinstance(evt, races.CountdownStarted):
                self.live = self._new_live()
            elif self.live is not None:
                if isinstance(evt, races.RacePaused):
                    self.live.pause(evt.at)
                elif isinstance(evt, races.RaceResumed):
                    self.live.resume(evt.at, state.paused_s)
                elif isinstance(evt, races.RunnerDisqualified):
                    self.live.disqualify(evt.runner_id)
                elif isinstance(evt, races.RunnerRetired):
                    self.live.retire(evt.runner_id)
            await self._announce(evt, version, now)
        if any(isinstance(e, races.RaceFinished | races.RaceAborted) for e in events):
            if self.live is not None:
                await self._standings(now)
            await self._flush()  # ack what arrived before the end, then close for good
            await self.out.close(ROOM_OVER)
            return
        done = set(state.finished) | set(state.disqualified) | state.retired
        if (
            state.registered
            and not self._closing_requested
            and races.status_at(state, now) in (races.RaceStatus.RUNNING, races.RaceStatus.PAUSED)
            and all(r in done for r in state.registered)
        ):
            self._closing_requested = True
            self._enqueue(_Job([races.Close(SYSTEM)], SYSTEM))


def _command(frame: Any, by: str) -> Any:
    match frame:
        case ControlStart():
            return races.StartCountdown(by, frame.countdown_s)
        case ControlPause():
            return races.Pause(by)
        case ControlResume():
            return races.Resume(by)
        case ControlAbort():
            return races.Abort(by, frame.reason)
        case ControlDisqualify():
            return races.Disqualify(by, frame.runner_id, frame.reason)
        case ControlClose():
            return races.Close(by)
    raise ValueError(f"not a control frame: {frame!r}")
