"""What a room connection knows: its options, the room's latest state (welcome, standings,
cues, alerts, results), the GPS fixes awaiting an ack, and the queue and waiters that deliver
incoming frames. `RoomConnection` (room.py) is built on it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection

from clients.sdk.clock import ClockSync
from clients.sdk.errors import RoomClosed, RoomError, _NotConnected
from clients.sdk.protocol import Frame, _int_or_none

log = logging.getLogger("clients.sdk")

TokenSource = str | Callable[[], Awaitable[str]]

_END = object()
_DEFAULT: Any = object()


class RoomState:
    """The state under a `RoomConnection` (whose docstring describes the options)."""

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

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def over(self) -> bool:
        """The room ended for good (e.g. closed with 4504): no reconnect will follow."""
        return isinstance(self._failure, RoomClosed)

    @property
    def offset_s(self) -> float | None:
        """Server clock - local clock, in seconds. In a drill room, the offset the room itself
        applies to this connection's acks (its latest `clock` answer); elsewhere the fastest of
        the last 8 ping/pong exchanges (before any: a rough guess from the welcome)."""
        if self.room_clock is not None and isinstance(self.room_clock.get("offset"), int | float):
            return float(self.room_clock["offset"])
        return self.clock.offset_s

    @property
    def is_drill(self) -> bool:
        return self.kind == "drill"

    @property
    def _reports_sync(self) -> bool:
        """Drill rooms want each finished exchange reported (spotters only watch)."""
        return self.is_drill and self.role != "spotter"

    @property
    def results(self) -> list[Frame] | Frame | None:
        """The room's results once known: a race's result rows (`closed` event or the welcome of
        a finished race), a drill's `drill_results` frame (scores, sync score); else None."""
        if self.drill_results is not None:
            return self.drill_results
        return self.race_results

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

    async def _send(self, frame: Frame) -> None:
        self._raise_if_failed()
        if self._ws is None or not self.connected:
            raise _NotConnected("not connected")
        async with self._send_lock:
            ws = self._ws
            if not self.connected:
                raise _NotConnected("not connected")
            await ws.send(json.dumps(frame, separators=(",", ":")))

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
