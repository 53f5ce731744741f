"""`RoomConnection`: one client of a live race or drill room, kept alive across failures."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, Self, cast

from websockets.exceptions import ConnectionClosed, InvalidStatus

from clients.sdk.errors import FrameRefused, RoomClosed, RoomError, RoomRefused, _NotConnected
from clients.sdk.link import RoomLink
from clients.sdk.protocol import GPS_FIELDS, Frame
from clients.sdk.room_state import _END


class RoomConnection(RoomLink):
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

    def abort_transport(self) -> None:
        """Drop the socket without a closing handshake, as a network failure would (close code
        1006 on this side). The connection then reconnects and resumes by itself."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait (bounded) until a socket is up and welcomed again after an outage."""
        await asyncio.wait_for(self._connected.wait(), timeout_s)

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

    async def retire(self) -> None:
        """Stop racing: this runner is DNF (final; the room answers with a `retired` event)."""
        await self._send({"type": "retire"})

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
