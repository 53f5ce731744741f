"""The scheduler is idempotent across restarts and concurrent processes: weekly challenges, and
the races that start by themselves."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from game import challenges as ch
from game import races
from server.boards.sql import SqlLeaderboards
from server.commands import execute
from server.scheduler import close_ended, open_weekly, start_due_races, tick
from server.store.event_store import EventStore
from server.store.progress import CHALLENGES, CoreProjection
from server.store.projections import ProjectionRunner

BERLIN = ZoneInfo("Europe/Berlin")


async def _challenges(store: EventStore) -> list[tuple[str, str]]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            select(CHALLENGES.c.id, CHALLENGES.c.status).order_by(CHALLENGES.c.id)
        )
        return [(r.id, r.status) for r in rows]


async def test_two_processes_ticking_at_once_open_each_week_once(store: EventStore) -> None:
    boards = SqlLeaderboards(store.engine)
    runners = [ProjectionRunner(store, [CoreProjection(boards)]) for _ in range(2)]
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # Wednesday of ISO week 48
    await asyncio.gather(*(tick(store, boards, r, BERLIN, now) for r in runners))
    await tick(store, boards, runners[0], BERLIN, now)  # a restart ticks again
    assert await _challenges(store) == [("weekly-2026-W48", "open"), ("weekly-2026-W49", "open")]
    assert await store.version("challenge-weekly-2026-W48") == 1


async def test_an_ended_challenge_closes_once_with_its_final_standings(store: EventStore) -> None:
    boards = SqlLeaderboards(store.engine)
    runner = ProjectionRunner(store, [CoreProjection(boards)])
    monday = datetime(2026, 11, 23, tzinfo=BERLIN)
    await open_weekly(store, BERLIN, monday)
    cid = ch.weekly_challenge_id(2026, 48)
    for who in ("ana", "ben"):
        await execute(
            store, f"challenge-{cid}", ch, ch.JoinChallenge(who), now=monday + timedelta(hours=1)
        )
    await runner.run_once()
    await boards.submit(f"challenge:{cid}", "ben", 9000.0, 1, direction=ch_direction(cid))
    await boards.submit(f"challenge:{cid}", "ana", 7000.0, 2, direction=ch_direction(cid))

    after = monday + timedelta(days=7, minutes=1)
    closed = await asyncio.gather(
        close_ended(store, boards, after), close_ended(store, boards, after)
    )
    assert sorted(closed[0] + closed[1]) == [cid]  # closed once, by one of the two
    await runner.run_once()
    events = await store.load(f"challenge-{cid}")
    final = events[-1]
    assert final.type == "ChallengeClosed"
    assert [s["runner_id"] for s in final.data["standings"]] == ["ben", "ana"]
    assert dict(await _challenges(store))[cid] == "closed"


def ch_direction(_cid: str) -> object:
    from game.ranking import Direction

    return Direction.HIGHER


async def test_the_scheduler_opens_weeks_from_the_configured_rotation(store: EventStore) -> None:
    monday = datetime(2026, 11, 30, tzinfo=BERLIN)  # W49: a "Backward Mile" week by default
    await open_weekly(store, BERLIN, monday, ch.rotation_of(["hour-of-retro"]))
    for week in (49, 50):
        events = await store.load(f"challenge-{ch.weekly_challenge_id(2026, week)}")
        assert events[0].data["template"] == "hour-of-retro"


def test_a_rotation_setting_with_an_unknown_template_is_refused() -> None:
    from pydantic import ValidationError

    from server.config import Settings

    assert Settings(weekly_rotation=["drill-week"]).rotation() == ch.rotation_of(["drill-week"])
    with pytest.raises(ValidationError, match="weekly_rotation"):
        Settings(weekly_rotation=["reverse-5k"])


async def test_an_auto_start_race_counts_down_to_its_time_once_and_no_other_does(
    store: EventStore,
) -> None:
    boards = SqlLeaderboards(store.engine)
    runner = ProjectionRunner(store, [CoreProjection(boards)])
    now = datetime(2026, 12, 5, 8, 59, tzinfo=UTC)
    plan = {  # race id: (seconds from now to its time, auto_start)
        "due": (60.0, True),
        "manual": (60.0, False),
        "later": (3600.0, True),
        "missed": (-3600.0, True),  # the servers were down: its organiser decides
    }
    for race_id, (ahead, auto) in plan.items():
        at = now + timedelta(seconds=ahead)
        cmd = races.ScheduleRace(race_id, f"Race {race_id}", 800.0, at, 10, "org", auto_start=auto)
        await execute(store, f"race-{race_id}", races, cmd, now=now - timedelta(days=1))
    await runner.run_once()
    started = await asyncio.gather(start_due_races(store, now), start_due_races(store, now))
    assert sorted(started[0] + started[1]) == ["due"]  # once, by one of the two processes
    [*_, countdown] = await store.load("race-due")
    assert countdown.type == "CountdownStarted"
    assert countdown.data["start_at"] == (now + timedelta(seconds=60)).timestamp()
    for race_id in ("manual", "later", "missed"):
        assert await store.version(f"race-{race_id}") == 1, race_id
    await runner.run_once()
    assert await start_due_races(store, now + timedelta(seconds=30)) == []  # already going
