"""The scheduler: opens this and next week's challenge, closes ended ones, and starts the
countdown of the races that start by themselves (`auto_start`).

Every process may run it: each step is a command on a challenge stream at an expected version,
so when two processes race, one append wins and the other gets a conflict it ignores. Restarts
are harmless for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from game import challenges as ch
from game import races
from game.errors import Conflict
from server.boards.base import Leaderboards
from server.commands import execute, load_state
from server.config import Settings
from server.store.event_store import EventStore
from server.store.progress import CHALLENGES, challenge_board
from server.store.projections import ProjectionRunner
from server.store.race_projection import RACES

log = logging.getLogger(__name__)
STANDINGS_SIZE = 100


async def open_weekly(
    store: EventStore,
    tz: ZoneInfo,
    now: datetime,
    rotation: tuple[ch.Template, ...] = ch.WEEKLY_ROTATION,
) -> list[str]:
    """Create the official weekly challenges of this ISO week and the next; returns new ids."""
    opened = []
    for when in (now, now + timedelta(days=7)):
        year, week, _ = when.astimezone(tz).isocalendar()
        cmd = ch.weekly_challenge(year, week, tz, rotation=rotation)
        try:
            await execute(
                store,
                f"challenge-{cmd.challenge_id}",
                ch,
                cmd,
                meta={"actor": "scheduler"},
                now=now,
            )
            opened.append(cmd.challenge_id)
        except Conflict:
            pass  # already open: another process or an earlier run did it
    return opened


async def close_ended(store: EventStore, boards: Leaderboards, now: datetime) -> list[str]:
    """Close every open challenge whose window has ended, with its final standings."""
    stmt = select(CHALLENGES.c.id).where(
        CHALLENGES.c.status == "open", CHALLENGES.c.ends_at <= now.timestamp()
    )
    async with store.engine.connect() as conn:
        ids = list((await conn.execute(stmt)).scalars().all())
    closed = []
    for cid in ids:
        top = await boards.top(challenge_board(cid), STANDINGS_SIZE)
        standings = [{"rank": e.rank, "runner_id": e.runner_id, "score": e.score} for e in top]
        try:
            await execute(
                store,
                f"challenge-{cid}",
                ch,
                ch.CloseChallenge(standings),
                meta={"actor": "scheduler"},
                now=now,
            )
            closed.append(cid)
        except Conflict:
            pass
    return closed


async def start_due_races(store: EventStore, now: datetime) -> list[str]:
    """Start the countdown of every auto-start race whose time is near (the gun at its
    scheduled time); returns their ids. Another process doing it first is a conflict, ignored."""
    t = now.timestamp()
    stmt = select(RACES.c.id).where(
        RACES.c.status == "scheduled",
        RACES.c.scheduled_at <= t + races.AUTO_START_LEAD_S,
        RACES.c.scheduled_at >= t - races.AUTO_START_LATE_S,
    )
    async with store.engine.connect() as conn:
        ids = list((await conn.execute(stmt)).scalars().all())
    started = []
    for race_id in ids:
        state, _ = await load_state(store, f"race-{race_id}", races)
        cmd = races.auto_start_due(state, t)
        if cmd is None:
            continue
        try:
            await execute(
                store, f"race-{race_id}", races, cmd, meta={"actor": "scheduler"}, now=now
            )
            started.append(race_id)
        except Conflict:
            pass  # started meanwhile: by its organiser, or by another process
    return started


async def tick(
    store: EventStore,
    boards: Leaderboards,
    runner: ProjectionRunner,
    tz: ZoneInfo,
    now: datetime,
    rotation: tuple[ch.Template, ...] = ch.WEEKLY_ROTATION,
) -> None:
    await runner.run_once()
    await open_weekly(store, tz, now, rotation)
    await close_ended(store, boards, now)
    await start_due_races(store, now)
    await runner.run_once()


async def run_scheduler(
    store: EventStore,
    boards: Leaderboards,
    runner: ProjectionRunner,
    settings: Settings,
    stop: asyncio.Event,
) -> None:
    """Tick until `stop` is set; failures are logged and retried on the next tick."""
    tz, rotation = ZoneInfo(settings.weekly_tz), settings.rotation()
    while not stop.is_set():
        try:
            await tick(store, boards, runner, tz, datetime.now(UTC), rotation)
        except Exception:
            log.exception("scheduler tick failed; retrying next tick")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.scheduler_interval_s)
