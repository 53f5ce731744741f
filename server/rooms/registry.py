"""The rooms this process runs: loaded on first use, evicted when idle, closed on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from server.rooms.backplane.base import Backplane
from server.rooms.room import Room, RoomNotFound
from server.store.event_store import EventStore

log = logging.getLogger(__name__)

IDLE_EVICT_S = 60.0
REAP_EVERY_S = 10.0


class RoomRegistry:
    """Owns every `Room` of this process (the lifespan creates one, as `state["rooms"]`)."""

    def __init__(self, store: EventStore, backplane: Backplane, *, tick_hz: float = 1.0) -> None:
        self.store = store
        self.backplane = backplane
        self.tick_hz = tick_hz
        self._rooms: dict[str, Room] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="rooms-reaper")

    async def get(self, room_id: str) -> Room:
        """The room of race `room_id`, loaded on first use (raises `RoomNotFound`)."""
        room = self._rooms.get(room_id)
        if room is not None:
            return room
        if self._closed:
            raise RoomNotFound(room_id)
        lock = self._loading.setdefault(room_id, asyncio.Lock())
        async with lock:
            room = self._rooms.get(room_id)
            if room is None:
                room = Room(room_id, self.store, self.backplane, tick_hz=self.tick_hz)
                await room.open()
                self._rooms[room_id] = room
        self._loading.pop(room_id, None)
        return room

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            now = time.monotonic()
            for room_id, room in list(self._rooms.items()):
                if self.backplane.local_subscribers(room_id) or room.busy:
                    room.idle_since = now
                elif now - room.idle_since > IDLE_EVICT_S:
                    del self._rooms[room_id]
                    with contextlib.suppress(Exception):
                        await room.close(1001)

    async def close(self, code: int = 1012) -> None:
        """Store what every room holds and close their sockets (1012: server restarting)."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        rooms, self._rooms = list(self._rooms.values()), {}
        for room in rooms:
            try:
                await room.close(code)
            except Exception:
                log.exception("room %s did not close cleanly", room.race_id)
        await self.backplane.close()
