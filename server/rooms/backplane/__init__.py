"""Room backplanes: carry a room's frames to every local socket and clients' input to its owner.

`backplane_from_settings` picks the backend: the Redis backplane (a lease per room, rooms across
processes) when `RETRORUN_REDIS_URL` is set, else the in-process one. A backplane that leases
rooms also offers `Ownership`, which the registry uses to follow and take over rooms owned by
other processes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from redis.asyncio import Redis

from server.config import Settings
from server.rooms.backplane.base import (
    Audience,
    Backplane,
    Inbound,
    Kept,
    Kind,
    Outbound,
    Subscriber,
)
from server.rooms.backplane.memory import MemoryBackplane
from server.rooms.backplane.redis import RedisBackplane

__all__ = [
    "Audience",
    "Backplane",
    "Inbound",
    "Kind",
    "MemoryBackplane",
    "Outbound",
    "Ownership",
    "RedisBackplane",
    "Subscriber",
    "backplane_from_settings",
    "fence_token",
]


@runtime_checkable
class Ownership(Protocol):
    """A backplane whose rooms are owned by one process among several, by lease."""

    def owns(self, room_id: str) -> bool:
        """This process still holds the room's lease (False once lost or lapsing)."""
        ...

    async def owner_alive(self, room_id: str) -> bool:
        """Some process holds the room's lease."""
        ...

    async def history(self, room_id: str) -> Kept | None:
        """The room's epoch, last seq, kept numbered broadcasts and the stream version they
        cover, for a new owner (None: nothing kept)."""
        ...

    def fence_token(self, room_id: str) -> int | None:
        """The token of this process's lease on the room (None: not the owner)."""
        ...


def fence_token(backplane: Backplane, room_id: str) -> int | None:
    """The token a room's owner stamps its appends with (`EventStore.append(fence=...)`); None
    on a backplane without leases (one process: nothing to fence)."""
    return backplane.fence_token(room_id) if isinstance(backplane, Ownership) else None


def backplane_from_settings(settings: Settings, redis: Redis | None) -> Backplane:
    """The Redis backplane when `settings.redis_url` is set (it needs the client), else memory."""
    if settings.redis_url:
        if redis is None:
            raise ValueError("RETRORUN_REDIS_URL is set but no Redis client was given")
        return RedisBackplane(redis)
    return MemoryBackplane()
