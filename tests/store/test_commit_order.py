"""Global order is commit order: a reader that tails the log while many writers append at once
never steps past an event that commits later (on PostgreSQL the positions come from a sequence,
so this holds only because appends take the advisory lock before drawing them)."""

from __future__ import annotations

import asyncio

from server.store.event_store import EventStore, NewEvent

WRITERS = 8
APPENDS = 25


async def test_a_tailing_reader_misses_no_event_while_writers_append_concurrently(
    store: EventStore,
) -> None:
    done = asyncio.Event()
    tailed: list[int] = []

    async def writer(w: int) -> None:
        for v in range(APPENDS):
            events = [NewEvent("Counted", {"n": v, "k": k}) for k in range(1 + v % 3)]
            await store.append(f"order-{w}", None if v % 5 == 4 else _version(w), events)
            _versions[w] += len(events)

    _versions = [0] * WRITERS

    def _version(w: int) -> int:
        return _versions[w]

    async def tail() -> None:
        after = 0
        while True:
            finished = done.is_set()
            page = await store.read_all(after, 7)
            tailed.extend(e.position for e in page)
            if page:
                after = page[-1].position
            elif finished:
                return
            else:
                await asyncio.sleep(0)

    tailer = asyncio.create_task(tail())
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    done.set()
    await tailer

    everything = [e.position for e in await store.read_all(0, 100_000)]
    assert tailed == everything
    assert len(everything) == WRITERS * sum(1 + v % 3 for v in range(APPENDS))
    for w in range(WRITERS):
        versions = [e.version for e in await store.load(f"order-{w}")]
        assert versions == list(range(1, len(versions) + 1))
