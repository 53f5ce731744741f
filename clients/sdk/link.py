"""The socket under a room connection: open and authenticate, read and dispatch frames, resume
the broadcasts after a gap, keep the clock in sync, and reconnect with backoff after a loss."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from clients.sdk.errors import (
    FrameRefused,
    RoomClosed,
    RoomError,
    RoomRefused,
    RoomUnavailable,
)
from clients.sdk.frames import RoomFrames
from clients.sdk.protocol import (
    FLOODING,
    TOKEN_REJECTED,
    Frame,
    _int_or_none,
    should_reconnect,
)

log = logging.getLogger("clients.sdk")


class RoomLink(RoomFrames):
    """Connection internals of a `RoomConnection`: the socket, reconnects, resume, clock sync."""

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
            self.resent = []
            # Closed again at once (the room moved once more): the reader sees the close and
            # reconnects; what was not acked is still kept and resent then.
            with contextlib.suppress(ConnectionClosed):
                if same_history and their_seq != self.seq:
                    await ws.send(json.dumps(self._resume_frame()))
                sent_upto = 0
                for _ in range(100):  # bounded: fixes added meanwhile go out in the next round
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


def _decode(raw: str | bytes) -> Frame | None:
    try:
        frame = json.loads(raw)
    except ValueError:
        log.warning("room sent a frame that is not JSON")
        return None
    return frame if isinstance(frame, dict) else None


def _answers_ping(frame: Frame, cid: str, sync: bool) -> bool:
    """The end of one clock exchange: the `pong` (races), the `clock` answer to its `sync`
    (drills), or an error about either."""
    kind = frame.get("type")
    if kind == "error":
        return frame.get("ref") in (cid, "s" + cid)
    if sync:
        return kind == "clock" and frame.get("cid") == "s" + cid
    return kind == "pong" and frame.get("cid") == cid
