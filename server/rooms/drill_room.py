"""The room runtime of one coordination drill: cues in sync on every phone, reactions scored.

Room id = drill id (`drill-<hex>`); the stream is `drill-<drill id>` (game.drill_sessions).

- **Start**: the coach (the drill's `coach_id`) or a moderator/admin sends `control {action:
  "start", countdown_s?}`; `StartDrill` fixes every cue at an absolute server time, the first one
  `countdown_s` (the lead, default 5 s) ahead. The room then announces each cue `CUE_AHEAD_S`
  before its `at` as a numbered `cue` frame (a `phase` frame first when the cue opens a phase),
  so every phone holds it in time and fires it at `at` on its own synced clock.
- **Clocks**: a connection reports finished ping/pong exchanges with `sync {t0, t1, t2, t3}`.
  Each gives offset = ((t1 - t0) + (t2 - t3)) / 2 (server - client) with round trip
  rtt = (t3 - t0) - (t2 - t1); the room uses the offset of the sample with the smallest rtt among
  the connection's last `CLOCK_WINDOW` (NTP's clock filter: a sample's error is at most rtt / 2,
  so the fastest exchange bounds it best) and answers each `sync` with `clock {offset, rtt}`.
  A connection without its own `MIN_SYNC_SAMPLES` samples borrows the account's latest estimate
  (a phone that reconnects keeps its clock).
- **Acks**: `ack {cue, t}` with the participant's own tap time; ack_at = t + offset is judged by
  `game.drills.judge_ack` (refusals are `error` frames with its codes); a tap later than the
  ack's own arrival (beyond the clock's error bound) is `ack_absurd`. Balance-hold cues take
  `ack {cue, t, steadiness}` instead. Accepted acks are stored in batches (`RecordAcks`, every
  `FLUSH_S` or `FLUSH_ACKS`), then answered with `ack {cue, reaction_ms | steadiness}`.
- **Finish**: after the last cue's ack window, `FinishDrill` publishes the scores and the group
  sync score as `drill_results`; then every socket is closed with 4504 (the room is over).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from game import drill_sessions as ds
from game import drills
from game.errors import DomainError
from game.events import fold, from_data
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
    AckFrame,
    ClockOut,
    ControlClose,
    ControlStart,
    CueOut,
    DrillAckOut,
    DrillResultsOut,
    PhaseOut,
    ResumeFrame,
    SyncFrame,
    encode,
)
from server.rooms.room import RoomNotFound
from server.store.event_store import ConcurrencyError, EventStore, NewEvent

log = logging.getLogger(__name__)

DRILL_PREFIX = "drill-"
DEFAULT_LEAD_S = 5.0
#: A cue frame goes out this long before the cue fires (phones need it in hand by then).
CUE_AHEAD_S = 2.0
#: Acks in flight when the last window closes still count if they arrive within this.
FINISH_GRACE_S = 0.5
FLUSH_S = 1.0
FLUSH_ACKS = 500
CLOCK_WINDOW = 8
MIN_SYNC_SAMPLES = 3
MAX_SYNC_RTT_S = 2.0
#: A reported exchange must be this recent (server time) to count.
MAX_SYNC_AGE_S = 120.0
#: A tap may lie this far after the ack's arrival (plus the clock's rtt) before it is absurd.
FUTURE_SLACK_S = 0.05
MAX_ATTEMPTS = 5
SYSTEM = "room"
#: A share-link spotter (server/rooms/ws.py) may watch a drill, never take part.
SPOTTER = "spotter"
_CONN_CLOCKS_KEPT = 4


@dataclass(slots=True)
class ClockFilter:
    """The last `CLOCK_WINDOW` (offset, rtt) samples of one connection."""

    samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=CLOCK_WINDOW))

    def add(self, t0: float, t1: float, t2: float, t3: float) -> None:
        offset = ((t1 - t0) + (t2 - t3)) / 2.0
        rtt = (t3 - t0) - (t2 - t1)
        self.samples.append((offset, rtt))

    def estimate(self) -> tuple[float, float]:
        """(offset, rtt) of the fastest recent exchange."""
        return min(self.samples, key=lambda s: s[1])


@dataclass(slots=True)
class _Pending:
    """One participant's accepted acks, not yet stored."""

    reactions: dict[int, float] = field(default_factory=dict)
    steadiness: list[float] = field(default_factory=list)
    replies: list[DrillAckOut] = field(default_factory=list)


@dataclass(slots=True)
class _Job:
    command: Any
    actor: str
    conn_id: str | None = None
    cid: str | None = None


_FINISH = "finish"


class DrillRoom:
    """The live room of drill `drill_id` (owned by this process)."""

    def __init__(
        self,
        drill_id: str,
        store: EventStore,
        backplane: Backplane,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.drill_id = drill_id
        self.stream_id = f"drill-{drill_id}"
        self.store = store
        self.backplane = backplane
        self.clock = clock
        self.out = Broadcasts(drill_id, backplane)
        self.state = ds.initial_state()
        self.version = 0
        self.joined: set[str] = set()
        #: runner -> conn id -> clock samples (the most recent connections only)
        self.clocks: dict[str, OrderedDict[str, ClockFilter]] = {}
        #: runner -> cue id -> reaction (ms), stored or pending: duplicates are refused
        self.accepted: dict[str, dict[int, float]] = {}
        self.held: dict[str, set[int]] = {}  # runner -> balance-hold cues with a steadiness
        self.pending: dict[str, _Pending] = {}
        self._pending_acks = 0
        self._cues: dict[int, drills.Cue] = {}
        self._phase_starts: list[float] = []
        self._next_cue = 0  # index into state.cues of the next cue to announce
        self._announced_phase = -1
        self._inbox: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=50_000)
        self.writes = WriteQueue(f"drill room {drill_id}", FLUSH_S, self._write, self._flush)
        self._flush_asked = False
        self._finish_asked = False
        self._tasks: list[asyncio.Task[None]] = []
        self._announcer: asyncio.Task[None] | None = None
        self.idle_since = time.monotonic()

    @property
    def race_id(self) -> str:
        """The room id (the registry logs rooms by this name)."""
        return self.drill_id

    # lifecycle

    async def open(self) -> None:
        """Load the drill (raises `RoomNotFound`), pick up a running one, start the tasks."""
        recorded = await self.store.load(self.stream_id)
        self.state = fold(
            ds.evolve, ds.initial_state(), (from_data(e.type, e.data) for e in recorded)
        )
        self.version = recorded[-1].version if recorded else 0
        if self.state.status == ds.DrillStatus.NONE:
            raise RoomNotFound(self.drill_id)
        self.accepted = {pid: dict(r) for pid, r in self.state.reactions.items()}
        if not await self.backplane.claim(self.drill_id, self._inbox.put):
            raise RuntimeError(f"room {self.drill_id} is owned elsewhere")
        self._tasks = [
            asyncio.create_task(
                handle_inbox(f"drill room {self.drill_id}", self._inbox, self._handle),
                name=f"drill-in-{self.drill_id}",
            ),
            self.writes.start(),
        ]
        if self.state.status == ds.DrillStatus.RUNNING:
            self._started(restart=True)

    async def close(self, code: int = 1012) -> None:
        """Store the pending acks, close the sockets with `code`, stop."""
        if not self._tasks:
            return
        input_task, _writer = self._tasks
        for task in (input_task, self._announcer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.writes.stop()
        await self.out.close(code)
        await self.backplane.release(self.drill_id)

    @property
    def over(self) -> bool:
        return self.state.status == ds.DrillStatus.FINISHED

    @property
    def busy(self) -> bool:
        """Running, or holding acks or work not yet stored: not to be evicted."""
        return self.state.status == ds.DrillStatus.RUNNING or bool(self.pending or self.writes)

    def is_controller(self, runner_id: str, role: str) -> bool:
        return role in CONTROLLER_ROLES or runner_id == self.state.coach_id

    # schedule

    @property
    def finish_at(self) -> float | None:
        """When the last ack window closes (the drill finishes then)."""
        st = self.state
        if st.end_at is None:
            return None
        last = st.end_at
        for cue in st.cues:
            if cue.scored:
                last = max(last, cue.at + drills.ACK_WINDOW_S)
            elif cue.move == drills.Move.BALANCE_HOLD:
                last = max(last, self._phase_end(self._phase_of(cue)) + drills.ACK_WINDOW_S)
        return round(last + FINISH_GRACE_S, 3)

    def _phase_of(self, cue: drills.Cue) -> int:
        return self._phase_at(cue.at)

    def _phase_at(self, at: float) -> int:
        return max(0, bisect.bisect_right(self._phase_starts, at + 1e-6) - 1)

    def _phase_end(self, index: int) -> float:
        return self._phase_starts[index] + self.state.phases[index].duration_s

    def _phase_now(self, now: float) -> int | None:
        st = self.state
        if st.start_at is None or st.end_at is None or not st.start_at <= now < st.end_at:
            return None
        return self._phase_at(now)

    def _ack_by(self, cue: drills.Cue) -> float | None:
        if cue.scored:
            return round(cue.at + drills.ACK_WINDOW_S, 3)
        if cue.move == drills.Move.BALANCE_HOLD:
            return round(self._phase_end(self._phase_of(cue)) + drills.ACK_WINDOW_S, 3)
        return None

    def _started(self, *, restart: bool) -> None:
        """Index the cue schedule and start announcing (after a restart: the cues not due yet)."""
        st = self.state
        assert st.start_at is not None
        self._cues = {c.id: c for c in st.cues}
        starts, t = [], st.start_at
        for p in st.phases:
            starts.append(t)
            t += p.duration_s
        self._phase_starts = starts
        if restart:
            now = self.clock()
            due = [c for c in st.cues if c.at - CUE_AHEAD_S <= now]
            self._next_cue = len(due)
            self._announced_phase = self._phase_of(due[-1]) if due else -1
        self._announcer = asyncio.create_task(
            self._announce_loop(), name=f"drill-cues-{self.drill_id}"
        )

    async def _announce_loop(self) -> None:
        cues = self.state.cues
        try:
            while self._next_cue < len(cues):
                wait = cues[self._next_cue].at - CUE_AHEAD_S - self.clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                now = self.clock()
                while self._next_cue < len(cues) and cues[self._next_cue].at - CUE_AHEAD_S <= now:
                    await self._announce(cues[self._next_cue])
                    self._next_cue += 1
            finish_at = self.finish_at
            if finish_at is not None and finish_at > self.clock():
                await asyncio.sleep(finish_at - self.clock())
            self._finish_asked = True
            self._enqueue(_FINISH)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("drill room %s: announcing failed", self.drill_id)

    async def _announce(self, cue: drills.Cue) -> None:
        index = self._phase_of(cue)
        if index > self._announced_phase:
            self._announced_phase = index
            await self.out.broadcast(self._phase_frame(index))
        await self.out.broadcast(self._cue_frame(cue))

    # frames

    def _cue_frame(self, cue: drills.Cue) -> CueOut:
        return {
            "type": "cue",
            "id": cue.id,
            "at": cue.at,
            "move": cue.move.value,
            "prompt": cue.prompt,
            "scored": cue.scored,
            "phase": self._phase_of(cue),
            "ack_by": self._ack_by(cue),
        }

    def _phase_frame(self, index: int) -> PhaseOut:
        p = self.state.phases[index]
        return {
            "type": "phase",
            "index": index,
            "of": len(self.state.phases),
            "move": p.move.value,
            "prompt": p.prompt or p.move.value.replace("_", " "),
            "duration_s": p.duration_s,
            "starts_at": round(self._phase_starts[index], 3),
            "ends_at": round(self._phase_end(index), 3),
        }

    def _results_frame(self) -> DrillResultsOut:
        st = self.state
        return {
            "type": "drill_results",
            "drill_id": st.drill_id,
            "at": round(self.clock(), 3),
            "scored_cues": sum(1 for c in st.cues if c.scored),
            "scores": list(st.scores),
            "sync_score": st.sync_score or 0.0,
        }

    def _summary(self) -> dict[str, Any]:
        st = self.state
        return {
            "id": st.drill_id,
            "title": st.title,
            "status": st.status.value,
            "coach_id": st.coach_id,
            "club_id": st.club_id,
            "phases": [
                {
                    "move": p.move.value,
                    "duration_s": p.duration_s,
                    "switch_cues": p.switch_cues,
                    "prompt": p.prompt,
                }
                for p in st.phases
            ],
            "start_at": st.start_at,
            "end_at": st.end_at,
            "finish_at": self.finish_at,
            "cues": len(st.cues),
            "scored_cues": sum(1 for c in st.cues if c.scored),
        }

    def _welcome(self, msg: Inbound, now: float) -> Outbound:
        st, runner_id = self.state, msg.runner_id
        controller = bool(msg.extra.get("moderator"))
        phase = self._phase_now(now) if st.status == ds.DrillStatus.RUNNING else None
        open_cues = [
            self._cue_frame(c)
            for c in st.cues[: self._next_cue]
            if max(c.at, self._ack_by(c) or c.at) >= now
        ]
        clock = self._estimate(msg.conn_id, runner_id)
        snapshot: dict[str, Any] = {
            "drill": self._summary(),
            "phase": self._phase_frame(phase) if phase is not None else None,
            "cues": open_cues,
            "participants": len(self.joined),
            "you": {
                "acked": {str(k): v for k, v in sorted(self.accepted.get(runner_id, {}).items())},
                "held": sorted(self.held.get(runner_id, ())),
                "clock": (
                    None
                    if clock is None
                    else {"offset": round(clock[0], 6), "rtt": round(clock[1], 6)}
                ),
            },
            "results": (
                {"scores": list(st.scores), "sync_score": st.sync_score} if self.over else None
            ),
        }
        role = (
            "coach" if runner_id == st.coach_id else ("moderator" if controller else "participant")
        )
        frame = {
            "type": "welcome",
            "room": self.drill_id,
            "kind": "drill",
            "role": role,
            "you": runner_id,
            "control": controller,
            "snapshot": snapshot,
            "seq": self.out.seq,
            "epoch": self.out.epoch,
            "server_time": round(now, 6),
        }
        return Outbound("welcome", encode(frame), seq=self.out.seq)

    # input

    async def _handle(self, msg: Inbound) -> None:
        now = self.clock()
        if msg.kind == "join":
            if not msg.extra.get("moderator") and msg.role != SPOTTER:
                self.joined.add(msg.runner_id)
            await self.out.publish(to_connection(self._welcome(msg, now), msg.conn_id))
            if self.over:  # the results are in the welcome; the room is closed for good
                await self.out.close(ROOM_OVER, msg.conn_id)
            return
        if msg.kind == "leave":
            return
        frame = msg.frame
        cid = getattr(frame, "cid", None)
        if msg.role == SPOTTER and isinstance(frame, SyncFrame | AckFrame):
            await self.out.refuse(msg.conn_id, "forbidden", "spotters watch drills", cid)
            return
        match frame:
            case SyncFrame():
                await self._sync(msg, frame)
            case AckFrame():
                await self._ack(msg, frame)
            case ResumeFrame():
                if not await self.out.replay(msg.conn_id, frame.after_seq, frame.epoch):
                    await self.out.publish(to_connection(self._welcome(msg, now), msg.conn_id))
            case ControlStart() | ControlClose():
                if not self.is_controller(msg.runner_id, msg.role):
                    await self.out.refuse(
                        msg.conn_id, "forbidden", "only the coach and moderators run a drill", cid
                    )
                    return
                command: Any
                if isinstance(frame, ControlStart):
                    lead = (
                        frame.countdown_s
                        if "countdown_s" in frame.model_fields_set
                        else DEFAULT_LEAD_S
                    )
                    command = ds.StartDrill(msg.runner_id, lead, secrets.randbits(31))
                else:
                    command = ds.FinishDrill(msg.runner_id)
                self._enqueue(_Job(command, msg.runner_id, msg.conn_id, cid))
            case _:
                kind = getattr(frame, "type", "?")
                action = getattr(frame, "action", None)
                what = f"control {action}" if action else kind
                await self.out.refuse(
                    msg.conn_id, "unsupported", f"a drill room does not take {what}", cid or kind
                )

    async def _sync(self, msg: Inbound, frame: SyncFrame) -> None:
        rtt = (frame.t3 - frame.t0) - (frame.t2 - frame.t1)
        received = msg.received_at or self.clock()
        if not (
            frame.t0 <= frame.t3
            and frame.t1 <= frame.t2 <= received + 0.001
            and received - frame.t2 <= MAX_SYNC_AGE_S
            and 0.0 <= rtt <= MAX_SYNC_RTT_S
        ):
            await self.out.refuse(
                msg.conn_id,
                "invalid_sync",
                "report a recent ping/pong: t0 <= t3, t1 <= t2, 0 <= round trip <= 2 s",
                frame.cid or "sync",
            )
            return
        conns = self.clocks.setdefault(msg.runner_id, OrderedDict())
        filt = conns.get(msg.conn_id)
        if filt is None:
            filt = conns[msg.conn_id] = ClockFilter()
            while len(conns) > _CONN_CLOCKS_KEPT:
                conns.popitem(last=False)
        conns.move_to_end(msg.conn_id)
        filt.add(frame.t0, frame.t1, frame.t2, frame.t3)
        offset, best_rtt = filt.estimate()
        reply: ClockOut = {
            "type": "clock",
            "offset": round(offset, 6),
            "rtt": round(best_rtt, 6),
            "samples": len(filt.samples),
        }
        if frame.cid is not None:
            reply["cid"] = frame.cid
        await self.out.direct(msg.conn_id, encode(dict(reply)))

    def _estimate(self, conn_id: str, runner_id: str) -> tuple[float, float] | None:
        """(offset, rtt) for acks from this connection, else from the account's latest one."""
        conns = self.clocks.get(runner_id)
        if not conns:
            return None
        own = conns.get(conn_id)
        if own is not None and len(own.samples) >= MIN_SYNC_SAMPLES:
            return own.estimate()
        for filt in reversed(conns.values()):
            if len(filt.samples) >= MIN_SYNC_SAMPLES:
                return filt.estimate()
        return None

    async def _ack(self, msg: Inbound, frame: AckFrame) -> None:
        ref = frame.cid or "ack"

        async def refuse(code: str, message: str) -> None:
            await self.out.refuse(msg.conn_id, code, message, ref)

        st, runner_id = self.state, msg.runner_id
        if self.is_controller(runner_id, msg.role):
            await refuse("forbidden", "the coach and moderators run the drill: participants ack")
            return
        if st.status != ds.DrillStatus.RUNNING:
            await refuse("drill_not_running", "the drill is not running")
            return
        cue = self._cues.get(frame.cue)
        if cue is None or frame.cue > self._next_cue:  # cue ids run 1.. in announce order
            await refuse(drills.AckProblem.UNKNOWN_CUE.value, f"no cue {frame.cue} announced")
            return
        clock = self._estimate(msg.conn_id, runner_id)
        if clock is None:
            await refuse(
                "clock_unsynced", f"send at least {MIN_SYNC_SAMPLES} sync frames before acks"
            )
            return
        offset, rtt = clock
        ack_at = frame.t + offset
        received = msg.received_at or self.clock()
        if ack_at > received + FUTURE_SLACK_S + rtt:
            await refuse(
                drills.AckProblem.ABSURD.value,
                f"the tap is {ack_at - received:.3f} s after the ack arrived: resync the clock",
            )
            return
        if frame.steadiness is not None:
            await self._hold(msg, frame, cue, ack_at, refuse)
            return
        mine = self.accepted.setdefault(runner_id, {})
        reaction, problem = drills.judge_ack(cue, ack_at, cue.id in mine)
        if problem is not None or reaction is None:
            assert problem is not None
            await refuse(problem.value, _PROBLEMS[problem])
            return
        mine[cue.id] = reaction
        pending = self.pending.setdefault(runner_id, _Pending())
        pending.reactions[cue.id] = reaction
        reply: DrillAckOut = {
            "type": "ack",
            "cue": cue.id,
            "reaction_ms": reaction,
            "steadiness": None,
        }
        if frame.cid is not None:
            reply["cid"] = frame.cid
        pending.replies.append(reply)
        self._count_pending()

    async def _hold(
        self,
        msg: Inbound,
        frame: AckFrame,
        cue: drills.Cue,
        ack_at: float,
        refuse: Callable[[str, str], Any],
    ) -> None:
        assert frame.steadiness is not None
        if cue.move != drills.Move.BALANCE_HOLD:
            await refuse("invalid_frame", "steadiness is only for balance_hold cues")
            return
        held = self.held.setdefault(msg.runner_id, set())
        if cue.id in held:
            await refuse(drills.AckProblem.DUPLICATE.value, "this hold is already reported")
            return
        ack_by = self._ack_by(cue)
        if ack_at < cue.at:
            await refuse(drills.AckProblem.EARLY.value, "the hold has not started")
            return
        if ack_by is not None and ack_at > ack_by:
            await refuse(drills.AckProblem.LATE.value, "the hold ended too long ago")
            return
        held.add(cue.id)
        pending = self.pending.setdefault(msg.runner_id, _Pending())
        pending.steadiness.append(frame.steadiness)
        reply: DrillAckOut = {
            "type": "ack",
            "cue": cue.id,
            "reaction_ms": None,
            "steadiness": frame.steadiness,
        }
        if frame.cid is not None:
            reply["cid"] = frame.cid
        pending.replies.append(reply)
        self._count_pending()

    def _count_pending(self) -> None:
        self._pending_acks += 1
        if self._pending_acks >= FLUSH_ACKS and not self._flush_asked:
            self._flush_asked = True
            self._enqueue(FLUSH)

    # writing

    def _enqueue(self, job: _Job | str) -> None:
        self.writes.put(job)

    async def _write(self, job: _Job | str) -> None:
        if job == FLUSH:
            self._flush_asked = False
            await self._flush()
        elif job == _FINISH:
            await self._flush()
            await self._run(_Job(ds.FinishDrill(SYSTEM), SYSTEM))
        elif isinstance(job, _Job):
            if isinstance(job.command, ds.FinishDrill):
                await self._flush()
            await self._run(job)

    async def _run(self, job: _Job) -> None:
        if isinstance(job.command, ds.FinishDrill) and self.over:
            return
        try:
            await self._commit([job.command], job.actor)
        except DomainError as exc:
            if job.conn_id is not None:
                await self.out.refuse(job.conn_id, exc.code, exc.message, job.cid or "control")
            else:
                log.info("drill room %s: %s refused: %s", self.drill_id, job.command, exc.code)

    async def _flush(self) -> None:
        """Store every pending ack (one `RecordAcks` per participant, one append), then answer
        each with `ack`."""
        taken, self.pending, self._pending_acks = self.pending, {}, 0
        if not taken:
            return
        commands = [
            ds.RecordAcks(pid, dict(p.reactions), list(p.steadiness)) for pid, p in taken.items()
        ]
        try:
            await self._commit(commands, SYSTEM, skip_refused=True)
        except BaseException:
            for pid, p in taken.items():  # keep them for the next flush: nothing was answered
                now = self.pending.setdefault(pid, _Pending())
                now.reactions = {**p.reactions, **now.reactions}
                now.steadiness = p.steadiness + now.steadiness
                now.replies = p.replies + now.replies
            raise
        for pid, p in taken.items():
            for reply in p.replies:
                await self.out.to_runner(pid, encode(dict(reply)))

    async def _commit(
        self, commands: Sequence[Any], actor: str, *, skip_refused: bool = False
    ) -> None:
        for _attempt in range(MAX_ATTEMPTS):
            now = datetime.fromtimestamp(self.clock(), UTC)
            state, events = self.state, []
            for command in commands:
                try:
                    new = ds.decide(state, command, now)
                except DomainError:
                    if not skip_refused:
                        raise
                    continue
                state = fold(ds.evolve, state, new)
                events += new
            if not events:
                return
            try:
                await self.store.append(
                    self.stream_id,
                    self.version,
                    [NewEvent.of(e) for e in events],
                    meta={"actor": actor},
                )
            except ConcurrencyError:
                await self._catch_up()
                continue
            self.version += len(events)
            await self._applied(events, state)
            return
        raise ConcurrencyError(self.stream_id, self.version, -1)

    async def _catch_up(self) -> None:
        recorded = await self.store.load(self.stream_id, after_version=self.version)
        if not recorded:
            return
        events = [from_data(e.type, e.data) for e in recorded]
        self.version = recorded[-1].version
        await self._applied(events, fold(ds.evolve, self.state, events))

    async def _applied(self, events: list[Any], state: ds.DrillState) -> None:
        """Committed: adopt the new state and broadcast what changed."""
        before, self.state = self.state.status, state
        for evt in events:
            if isinstance(evt, ds.DrillStarted) and before == ds.DrillStatus.SCHEDULED:
                self._started(restart=False)
                await self.out.broadcast(
                    {
                        "type": "event",
                        "event": "started",
                        "start_at": evt.start_at,
                        "end_at": state.end_at,
                        "finish_at": self.finish_at,
                        "cues": len(state.cues),
                        "scored_cues": sum(1 for c in state.cues if c.scored),
                        "by": evt.by,
                    }
                )
            elif isinstance(evt, ds.DrillFinished):
                announcer = self._announcer
                if announcer is not None and not announcer.done() and not self._finish_asked:
                    announcer.cancel()
                await self.out.broadcast(self._results_frame())
                await self.out.close(ROOM_OVER)


_PROBLEMS = {
    drills.AckProblem.EARLY: "the cue has not fired yet at that time",
    drills.AckProblem.LATE: f"more than {drills.ACK_WINDOW_S:g} s after the cue: a miss",
    drills.AckProblem.DUPLICATE: "this cue is already acked",
    drills.AckProblem.ABSURD: f"faster than {drills.MIN_REACTION_MS:g} ms is anticipation",
    drills.AckProblem.UNKNOWN_CUE: "no such cue",
    drills.AckProblem.NOT_SCORED: "this cue takes no ack",
}


def is_drill_room(room_id: str) -> bool:
    """Drill ids start with `drill-` (POST /api/v1/drills); everything else is a race."""
    return room_id.startswith(DRILL_PREFIX)
