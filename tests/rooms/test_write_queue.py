"""A room's writes (server/rooms/common.py `WriteQueue`): in order, and a write that fails
because the database is down is retried, not dropped (a finish must survive an outage)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from server.rooms import common
from server.rooms.common import FLUSH, WriteQueue
from server.store.event_store import StaleFence


async def _started(
    run: Callable[[str], Awaitable[None]], jobs: tuple[str, ...], done: list[str], until: int
) -> WriteQueue:
    """A running queue (with a flush that does nothing) given `jobs`, once `done` holds
    `until` of them (bounded wait)."""

    async def flush() -> None:
        return None

    queue = WriteQueue("test room", 60.0, run, flush)
    queue.start()
    for job in jobs:
        queue.put(job)
    async with asyncio.timeout(5):
        while len(done) < until:
            await asyncio.sleep(0.005)
    return queue


async def test_a_failed_write_is_retried_first_and_later_jobs_wait_their_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(common, "RETRY_FIRST_S", 0.01)
    monkeypatch.setattr(common, "RETRY_MAX_S", 0.02)
    outage = {"left": 3}
    done: list[str] = []
    flushes = 0

    async def run(job: str) -> None:
        if job == FLUSH:
            await flush()
            return
        if job == "finish" and outage["left"]:
            outage["left"] -= 1
            raise ConnectionRefusedError("the database is restarting")
        done.append(job)

    async def flush() -> None:
        nonlocal flushes
        flushes += 1

    queue = WriteQueue("test room", 60.0, run, flush)
    queue.start()
    for job in ("start", "finish", "close"):
        queue.put(job)
    async with asyncio.timeout(5):
        while len(done) < 3:
            await asyncio.sleep(0.005)
    assert done == ["start", "finish", "close"]  # retried in place: order kept, nothing twice
    assert outage["left"] == 0 and not queue
    await queue.stop()  # a last flush, then the task ends
    assert flushes == 1
    queue.put("after the stop")
    await asyncio.sleep(0.05)
    assert done == ["start", "finish", "close"]


async def test_a_refused_write_is_dropped_not_retried() -> None:
    done: list[str] = []
    attempts = {"stale": 0}

    async def run(job: str) -> None:
        if job == "stale":  # e.g. the lease moved on: the store refuses this owner's writes
            attempts["stale"] += 1
            raise StaleFence("race-x", 1, 2)
        done.append(job)

    queue = await _started(run, ("a", "stale", "b"), done, 2)
    assert done == ["a", "b"] and attempts["stale"] == 1
    await queue.stop()


async def test_an_outage_is_logged_as_a_warning_and_a_bug_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A database that is away is expected (a warning, no traceback, in every retry); any other
    failure is a bug and keeps its traceback."""
    monkeypatch.setattr(common, "RETRY_FIRST_S", 0.01)
    failures = iter([ConnectionRefusedError("restarting"), KeyError("a bug")])
    done: list[str] = []

    async def run(job: str) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        done.append(job)

    with caplog.at_level("WARNING", logger=common.__name__):
        queue = await _started(run, ("finish",), done, 1)
        await queue.stop()
    records = [r for r in caplog.records if "write failed" in r.getMessage()]
    assert [(r.levelname, r.exc_info is not None) for r in records] == [
        ("WARNING", False),
        ("ERROR", True),
    ]
    assert "database unavailable (ConnectionRefusedError)" in records[0].getMessage()
    assert done[0] == "finish"  # retried after both failures
