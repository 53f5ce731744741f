"""The backplane interface: one room owner, subscribers in any process.

A room has one owner (the process that runs its `Room`); every process holds some of its sockets.
`forward` carries a client's input to the owner's inbox; `publish` carries the owner's output to
every process, which hands it to its local `Subscriber`s. The in-process backend (`memory.py`) is
the embedded default; a Redis backend (lease per room, pub/sub per room) plugs in behind the same
Protocol. Outbound frames are already encoded: a process never re-encodes, it only splices the
small per-runner part of a standings frame.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

#: event: ordered, numbered, kept until sent. standings: a newer one replaces an unsent older one.
#: direct: one connection or runner (ack, error, pong, flag). welcome / replay: answers to a join
#: or a resume (they reset what the connection has sent). close: close the sockets.
Kind = Literal["event", "standings", "direct", "welcome", "replay", "pong", "close"]
Audience = Literal["all", "moderators", "runner", "connection"]


@dataclass(frozen=True, slots=True, eq=False)
class Outbound:
    """A frame from a room to some of its sockets, encoded once."""

    kind: Kind
    text: str
    audience: Audience = "all"
    to: str | None = None  # runner id or connection id
    seq: int = 0
    #: standings: runner id -> that runner's own row as JSON, spliced in as `"you"`.
    personal: Mapping[str, str] | None = None
    #: replay: the event frames of the replay, in order.
    batch: tuple[Outbound, ...] = ()
    close_code: int = 0
    #: event: the room's stream version the frame reports (0: none), kept with the sequence so
    #: that a new owner broadcasts what its predecessor committed and did not get to send.
    version: int = 0


@dataclass(frozen=True, slots=True)
class Kept:
    """What a room's previous owner left for the next one (a backplane with leases)."""

    epoch: str
    seq: int  # the last numbered broadcast
    frames: list[Outbound]  # the numbered broadcasts kept for resumes, oldest first
    #: The stream version the last broadcast that reported one covered (None: none did).
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    """Input for a room's owner: a decoded client frame, a join or a leave."""

    conn_id: str
    runner_id: str
    role: str  # the account's role: runner / moderator / admin
    kind: Literal["frame", "join", "leave"]
    frame: Any = None
    received_at: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)


class Subscriber(Protocol):
    """A local socket of a room."""

    @property
    def conn_id(self) -> str: ...
    @property
    def runner_id(self) -> str: ...
    @property
    def moderator(self) -> bool: ...
    def deliver(self, out: Outbound) -> None:
        """Take a frame without blocking (the subscriber queues it)."""


Inbox = Callable[[Inbound], Awaitable[None]]


class Backplane(Protocol):
    """Carries frames between a room's owner and its sockets (in one process or many)."""

    async def claim(self, room_id: str, inbox: Inbox) -> bool:
        """Become the room's owner (False: another process owns it)."""
        ...

    async def release(self, room_id: str) -> None: ...

    async def forward(self, room_id: str, message: Inbound) -> None:
        """Hand a client's input to the room's owner."""
        ...

    async def publish(self, room_id: str, out: Outbound) -> None:
        """Deliver a frame to every matching subscriber of the room, in publish order."""
        ...

    def subscribe(self, room_id: str, subscriber: Subscriber) -> None: ...

    def unsubscribe(self, room_id: str, subscriber: Subscriber) -> None: ...

    def local_subscribers(self, room_id: str) -> int: ...

    async def close(self) -> None: ...
