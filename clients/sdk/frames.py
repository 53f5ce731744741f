"""Incoming frames of a room connection: acks and pongs consumed, room state tracked, and
broadcasts delivered in `seq` order, once each (a gap or a new `epoch` asks for `resume`)."""

from __future__ import annotations

import contextlib
from typing import cast

from websockets.exceptions import ConnectionClosed

from clients.sdk.errors import RoomError, _NotConnected
from clients.sdk.protocol import BROADCASTS, Frame, _int_or_none
from clients.sdk.room_state import RoomState


class RoomFrames(RoomState):
    """Frame dispatch of a `RoomConnection`; `RoomLink` feeds it from the socket."""

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
