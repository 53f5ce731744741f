"""Gather, decide, append: the one way a command reaches the event log.

Load the stream, fold it with the decider's `evolve`, call the pure `decide`, append the new
events at the version that was read. When another writer got there first the whole cycle runs
again on the fresh stream (bounded), so a retry never decides on stale state.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from game.events import fold, from_data
from server.store.event_store import AppendResult, ConcurrencyError, EventStore, NewEvent

MAX_ATTEMPTS = 12


class DeciderModule(Protocol):
    """A `game/` decider module: `initial_state`, `decide`, `evolve`."""

    def initial_state(self) -> Any: ...
    def decide(self, state: Any, command: Any, now: datetime) -> list[Any]: ...
    def evolve(self, state: Any, event: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    state: Any
    events: list[Any]
    result: AppendResult | None


async def load_state(store: EventStore, stream_id: str, decider: DeciderModule) -> tuple[Any, int]:
    """The stream's current state and version."""
    recorded = await store.load(stream_id)
    events = [from_data(e.type, e.data) for e in recorded]
    state = fold(decider.evolve, decider.initial_state(), events)
    return state, recorded[-1].version if recorded else 0


async def execute(
    store: EventStore,
    stream_id: str,
    decider: DeciderModule,
    command: Any | Callable[[Any], Any],
    *,
    meta: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Outcome:
    """Decide `command` on the stream and append the result; retried on a version conflict.

    `command` may be a function of the current state, for commands that depend on it.
    """
    for attempt in range(MAX_ATTEMPTS):
        state, version = await load_state(store, stream_id, decider)
        cmd = command(state) if callable(command) else command
        new = decider.decide(state, cmd, now or datetime.now(UTC))
        if not new:
            return Outcome(state, [], None)
        try:
            result = await store.append(
                stream_id,
                version,
                [NewEvent.of(e) for e in new],
                meta=meta,
                idempotency_key=idempotency_key,
            )
        except ConcurrencyError:
            if attempt == MAX_ATTEMPTS - 1:
                raise
            # full jitter: writers that collided do not collide again in lockstep
            await asyncio.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))
            continue
        return Outcome(fold(decider.evolve, state, new), new, result)
    raise AssertionError("unreachable")
