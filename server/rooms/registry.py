"""The rooms this process runs: loaded on first use, evicted when idle, closed on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

from game.safety import SafetyPolicy
from server.rooms.backplane import Ownership
from server.rooms.backplane.base import Backplane
from server.rooms.drill_room import DrillRoom, is_drill_room
from server.rooms.room import Room, RoomNotFound
from server.store.event_store import EventStore

log = logging.getLogger(__name__)

IDLE_EVICT_S = 60.0
REAP_EVERY_S = 10.0
#: Leasing backplane (Redis): how often ownership is checked (lost leases, owners gone).
WATCH_S = 0.5


class RoomRegistry:
    """Owns every `Room` of this process (the lifespan creates one, as `state["rooms"]`)."""

    def __init__(
        self,
        store: EventStore,
        backplane: Backplane,
        *,
        tick_hz: float = 1.0,
        safety: SafetyPolicy | None = None,
    ) -> None:
        self.store = store
        self.backplane = backplane
        self.tick_hz = tick_hz
        self.safety = safety or SafetyPolicy()
        self._rooms: dict[str, Room | DrillRoom] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        #: Leasing backplane: rooms another process owns; here they only hold sockets.
        self._following: set[str] = set()
        self._watcher: asyncio.Task[None] | None = None
        #: Open room sockets per account (or share link) in this process (server/rooms/ws.py).
        self.sockets: Counter[str] = Counter()

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="rooms-reaper")
        if isinstance(self.backplane, Ownership):
            self._watcher = asyncio.create_task(self._watch(self.backplane), name="rooms-watch")

    async def get(self, room_id: str) -> Room | DrillRoom:
        """The room of race or drill (`drill-...`) `room_id`, loaded on first use (raises
        `RoomNotFound`)."""
        room = self._rooms.get(room_id)
        if room is not None:
            return room
        if self._closed:
            raise RoomNotFound(room_id)
        lock = self._loading.setdefault(room_id, asyncio.Lock())
        async with lock:
            room = self._rooms.get(room_id)
            if room is None:
                room = await self._open(room_id)
                self._rooms[room_id] = room
        self._loading.pop(room_id, None)
        return room

    def _new(self, room_id: str) -> Room | DrillRoom:
        if is_drill_room(room_id):
            return DrillRoom(room_id, self.store, self.backplane)
        return Room(room_id, self.store, self.backplane, tick_hz=self.tick_hz, safety=self.safety)

    async def _open(self, room_id: str) -> Room | DrillRoom:
        """Open the room here. With a leasing backplane, a room another process owns is followed
        instead: loaded but not running (it answers `is_controller`; its owner does the rest)."""
        leased = self.backplane if isinstance(self.backplane, Ownership) else None
        for _attempt in range(3):
            room = self._new(room_id)
            if leased is not None:
                kept = await leased.history(room_id)  # continue the previous owner's sequence
                if kept is not None:
                    room.out.epoch, room.out.seq = kept.epoch, kept.seq
                    room.out.history.extend(kept.frames)
                    room.out.covered = kept.version
            try:
                await room.open()
            except RuntimeError:  # the claim failed
                if leased is None:
                    raise
                if await leased.owner_alive(room_id):
                    self._following.add(room_id)
                    return room
                continue  # the owner let go meanwhile: claim again
            self._following.discard(room_id)
            return room
        raise RuntimeError(f"room {room_id}: neither claimed nor owned elsewhere")

    async def _watch(self, leased: Ownership) -> None:
        """Stop rooms whose lease was lost; take over followed rooms whose owner is gone (while
        this process holds sockets of them); forget followed rooms idle here."""
        while True:
            await asyncio.sleep(WATCH_S)
            for room_id, room in list(self._rooms.items()):
                try:
                    await self._check(leased, room_id, room)
                except Exception:
                    log.exception("room %s: ownership check failed", room_id)

    async def _check(self, leased: Ownership, room_id: str, room: Room | DrillRoom) -> None:
        if room_id not in self._following:
            if not leased.owns(room_id) and self._rooms.get(room_id) is room:
                log.warning("room %s: lease lost; closing it here", room_id)
                del self._rooms[room_id]
                await room.close(1012)
            return
        now = time.monotonic()
        if self.backplane.local_subscribers(room_id):
            room.idle_since = now
            if await leased.owner_alive(room_id):
                return
            async with self._loading.setdefault(room_id, asyncio.Lock()):
                if self._rooms.get(room_id) is room:
                    self._rooms[room_id] = await self._open(room_id)
                    if room_id not in self._following:
                        log.info("room %s: taken over from a lapsed owner", room_id)
            self._loading.pop(room_id, None)
        elif now - room.idle_since > IDLE_EVICT_S and self._rooms.get(room_id) is room:
            del self._rooms[room_id]
            self._following.discard(room_id)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            now = time.monotonic()
            for room_id, room in list(self._rooms.items()):
                if self.backplane.local_subscribers(room_id) or room.busy:
                    room.idle_since = now
                elif now - room.idle_since > IDLE_EVICT_S:
                    del self._rooms[room_id]
                    self._following.discard(room_id)
                    with contextlib.suppress(Exception):
                        await room.close(1001)

    async def drain(self, timeout_s: float = 8.0) -> None:
        """Before the server closes its connections: store what every room holds, close each
        socket with 1012 and a closing handshake (the server keeps reading until the client's
        close arrives, so a phone still sending gets a clean 1012, not a reset), and wait,
        bounded, until the sockets are gone."""
        await self.close(1012)
        deadline = time.monotonic() + timeout_s
        while self.sockets and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def close(self, code: int = 1012) -> None:
        """Store what every room holds and close their sockets (1012: server restarting)."""
        if self._closed:
            return
        self._closed = True
        for task in (self._reaper, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        rooms, self._rooms = list(self._rooms.values()), {}
        for room in rooms:
            try:
                await room.close(code)
            except Exception:
                log.exception("room %s did not close cleanly", room.race_id)
        await self.backplane.close()
