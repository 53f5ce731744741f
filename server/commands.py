"""Gather, decide, append: the one way a command reaches the event log.

Load the stream, fold it with the decider's `evolve`, call the pure `decide`, append the new
events at the version that was read. When another writer got there first the whole cycle runs
again on the fresh stream (bounded), so a retry never decides on stale state.

A per-store state cache keeps the state of recently used streams (a bounded LRU) with their
version and the position and time of the event at that version:

- A read (`load_state`) reads only the events from the cached version on (one query) and folds
  the ones after it. The event at the cached version comes back too and must be the cached one,
  so a log that was reset or restored under a running process is noticed (the entry is dropped
  and the stream read whole). Other processes' appends are always seen.
- A command decides on the cached state without reading first and appends at the cached
  version. The append is checked at that version, so a decision lands only if nobody (in any
  process) appended since: then the cached state *was* the current one. Otherwise the append
  is refused with a version conflict, the entry is dropped and the command runs again on a
  fresh load. A refusal (`DomainError`) or a no-op decided on a cached state is confirmed on a
  fresh load before it is answered, so no caller ever sees an answer given on a stale state.
  After an append the entry moves on to the new version.

States are immutable (deciders' `evolve` copies), so sharing one between callers is safe.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from game.events import fold, from_data
from server.store.event_store import (
    AppendResult,
    ConcurrencyError,
    EventStore,
    NewEvent,
    RecordedEvent,
)

MAX_ATTEMPTS = 12
#: Streams whose state a process keeps between commands (least recently used go first).
STATE_CACHE_SIZE = 512


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


class CachedState(NamedTuple):
    version: int
    #: Position and time of the event at `version`: a rewritten log does not match both.
    position: int
    recorded_at: datetime | None
    state: Any

    def names(self, event: RecordedEvent) -> bool:
        """Whether `event` is the one this entry was folded up to."""
        return (event.version, event.position, event.recorded_at) == (
            self.version,
            self.position,
            self.recorded_at,
        )


class StateCache:
    """A bounded LRU of stream states, keyed by stream and decider."""

    def __init__(self, maxsize: int = STATE_CACHE_SIZE) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple[str, object], CachedState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, stream_id: str, decider: object) -> CachedState | None:
        key = (stream_id, decider)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, stream_id: str, decider: object, entry: CachedState) -> None:
        """Keep `entry` unless a newer version of the stream is cached already."""
        if entry.version <= 0 or self.maxsize <= 0:
            return
        key = (stream_id, decider)
        held = self._entries.get(key)
        if held is not None and held.version > entry.version:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def discard(self, stream_id: str, decider: object) -> None:
        self._entries.pop((stream_id, decider), None)

    def clear(self) -> None:
        self._entries.clear()


_CACHES: weakref.WeakKeyDictionary[EventStore, StateCache] = weakref.WeakKeyDictionary()


def state_cache(store: EventStore) -> StateCache:
    """The state cache of `store` (one per store, so one per database and process)."""
    cache = _CACHES.get(store)
    if cache is None:
        cache = _CACHES[store] = StateCache()
    return cache


async def _load(store: EventStore, stream_id: str, decider: DeciderModule) -> CachedState:
    """The stream's state from the database, starting from the cached entry when it holds."""
    cache = state_cache(store)
    held = cache.get(stream_id, decider)
    if held is not None:
        recorded = await store.load(stream_id, held.version - 1)
        if recorded and held.names(recorded[0]):
            if len(recorded) == 1:
                return held
            events = [from_data(e.type, e.data) for e in recorded[1:]]
            entry = _entry(recorded[-1], fold(decider.evolve, held.state, events))
            cache.put(stream_id, decider, entry)
            return entry
        cache.discard(stream_id, decider)  # the log under the entry changed: read it whole
    recorded = await store.load(stream_id)
    state = fold(
        decider.evolve, decider.initial_state(), [from_data(e.type, e.data) for e in recorded]
    )
    if not recorded:
        return CachedState(0, 0, None, state)
    entry = _entry(recorded[-1], state)
    cache.put(stream_id, decider, entry)
    return entry


def _entry(last: RecordedEvent, state: Any) -> CachedState:
    return CachedState(last.version, last.position, last.recorded_at, state)


async def load_state(store: EventStore, stream_id: str, decider: DeciderModule) -> tuple[Any, int]:
    """The stream's current state and version."""
    entry = await _load(store, stream_id, decider)
    return entry.state, entry.version


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
    cache = state_cache(store)
    attempt, fresh_load = 0, False
    while True:
        entry = None if fresh_load else cache.get(stream_id, decider)
        checked = entry is None  # read from the database just now, not taken from the cache
        fresh_load = False
        if entry is None:
            entry = await _load(store, stream_id, decider)
        state, version = entry.state, entry.version
        try:
            cmd = command(state) if callable(command) else command
            new = decider.decide(state, cmd, now or datetime.now(UTC))
        except Exception:
            if checked:
                raise
            cache.discard(stream_id, decider)  # confirm the refusal on a fresh load
            fresh_load = True
            continue
        if not new:
            if checked:
                return Outcome(state, [], None)
            cache.discard(stream_id, decider)
            fresh_load = True
            continue
        try:
            result = await store.append(
                stream_id,
                version,
                [NewEvent.of(e) for e in new],
                meta=meta,
                idempotency_key=idempotency_key,
            )
        except ConcurrencyError:
            cache.discard(stream_id, decider)
            fresh_load = True
            if not checked:
                continue  # the cached state was behind: a fresh load, no back-off
            attempt += 1
            if attempt == MAX_ATTEMPTS:
                raise
            # full jitter: writers that collided do not collide again in lockstep
            await asyncio.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** (attempt - 1))))
            continue
        after = fold(decider.evolve, state, new)
        if not result.duplicate:
            cache.put(
                stream_id,
                decider,
                CachedState(result.last_version, result.last_position, result.recorded_at, after),
            )
        return Outcome(after, new, result)
