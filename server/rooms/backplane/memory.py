"""The in-process backplane: every room is owned here, delivery is a function call."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.rooms.backplane.base import Inbound, Inbox, Outbound, Subscriber


class NoOwner(LookupError):
    """No process owns the room (it was closed)."""


@dataclass
class _Local:
    subs: dict[str, Subscriber] = field(default_factory=dict)
    by_runner: dict[str, dict[str, Subscriber]] = field(default_factory=dict)
    moderators: dict[str, Subscriber] = field(default_factory=dict)


class MemoryBackplane:
    """Rooms and sockets in one process (the embedded default)."""

    def __init__(self) -> None:
        self._owners: dict[str, Inbox] = {}
        self._rooms: dict[str, _Local] = {}

    async def claim(self, room_id: str, inbox: Inbox) -> bool:
        if room_id in self._owners:
            return False
        self._owners[room_id] = inbox
        return True

    async def release(self, room_id: str) -> None:
        self._owners.pop(room_id, None)

    async def forward(self, room_id: str, message: Inbound) -> None:
        inbox = self._owners.get(room_id)
        if inbox is None:
            raise NoOwner(room_id)
        await inbox(message)

    async def publish(self, room_id: str, out: Outbound) -> None:
        local = self._rooms.get(room_id)
        if local is None:
            return
        if out.audience == "all":
            targets = list(local.subs.values())
        elif out.audience == "moderators":
            targets = list(local.moderators.values())
        elif out.audience == "runner":
            targets = list(local.by_runner.get(out.to or "", {}).values())
        else:
            sub = local.subs.get(out.to or "")
            targets = [sub] if sub is not None else []
        for sub in targets:
            sub.deliver(out)

    def subscribe(self, room_id: str, subscriber: Subscriber) -> None:
        local = self._rooms.setdefault(room_id, _Local())
        local.subs[subscriber.conn_id] = subscriber
        local.by_runner.setdefault(subscriber.runner_id, {})[subscriber.conn_id] = subscriber
        if subscriber.moderator:
            local.moderators[subscriber.conn_id] = subscriber

    def unsubscribe(self, room_id: str, subscriber: Subscriber) -> None:
        local = self._rooms.get(room_id)
        if local is None:
            return
        local.subs.pop(subscriber.conn_id, None)
        local.moderators.pop(subscriber.conn_id, None)
        mine = local.by_runner.get(subscriber.runner_id)
        if mine is not None:
            mine.pop(subscriber.conn_id, None)
            if not mine:
                del local.by_runner[subscriber.runner_id]
        if not local.subs:
            del self._rooms[room_id]

    def local_subscribers(self, room_id: str) -> int:
        local = self._rooms.get(room_id)
        return len(local.subs) if local else 0

    async def close(self) -> None:
        self._owners.clear()
        self._rooms.clear()
