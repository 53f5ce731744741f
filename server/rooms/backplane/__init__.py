"""Room backplanes: carry a room's frames to every local socket and clients' input to its owner."""

from __future__ import annotations

from server.rooms.backplane.base import Audience, Backplane, Inbound, Kind, Outbound, Subscriber
from server.rooms.backplane.memory import MemoryBackplane

__all__ = ["Audience", "Backplane", "Inbound", "Kind", "MemoryBackplane", "Outbound", "Subscriber"]
