"""The core projection: challenges, members, runs, challenge progress and the leaderboards.

Everything is recomputed from read-model rows for the (challenge, runner) pairs an event touches,
so a moderator's later decision (reject, crop, approve) simply moves the numbers, and a rebuild
from position 0 lands on the same rows. `reached_at` on a board is the log position of the event
that last changed the score: ties go to whoever got there first, identically after a rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from game import challenges as ch
from game.ranking import Direction
from game.rewards import xp_for_run
from server.boards.base import Leaderboards
from server.boards.sql import SqlLeaderboards
from server.store.club_projection import CLUB_MEMBERS, ClubHandlers, club_board
from server.store.drill_projection import DrillHandlers
from server.store.event_store import RecordedEvent
from server.store.moderation_projection import BANS, ModerationHandlers
from server.store.race_projection import RaceHandlers
from server.store.read_models import ChallengeMemberRow, ChallengeProgressRow, ChallengeRow, RunRow

CHALLENGES = ChallengeRow.__table__  # type: ignore[attr-defined]
MEMBERS = ChallengeMemberRow.__table__  # type: ignore[attr-defined]
PROGRESS = ChallengeProgressRow.__table__  # type: ignore[attr-defined]
RUNS = RunRow.__table__  # type: ignore[attr-defined]

XP_BOARD = "xp:all"


def weekly_board(ended_at: float) -> str:
    """The weekly distance board of the ISO week (UTC) a run ended in."""
    year, week, _ = datetime.fromtimestamp(ended_at, UTC).isocalendar()
    return f"weekly:{year}-W{week:02d}"


def challenge_board(challenge_id: str) -> str:
    return f"challenge:{challenge_id}"


class CoreProjection(RaceHandlers, ClubHandlers, ModerationHandlers, DrillHandlers):
    """Read models for challenges, runs and boards."""

    name = "core"

    def __init__(self, boards: Leaderboards) -> None:
        self.boards = boards

    async def reset(self, conn: AsyncConnection) -> None:
        for table in (PROGRESS, MEMBERS, CHALLENGES, RUNS, BANS):
            await conn.execute(delete(table))
        await self._reset_races(conn)
        await self._reset_clubs(conn)
        await self._reset_drills(conn)
        if isinstance(self.boards, SqlLeaderboards):
            await self.boards.clear_all_in(conn)
        else:
            await self.boards.clear_all()

    async def apply(self, conn: AsyncConnection, events: Sequence[RecordedEvent]) -> None:
        for e in events:
            handler = getattr(self, f"_on_{e.type}", None)
            if handler is not None:
                await handler(conn, e.data, e.position)

    # challenges

    async def _on_ChallengeCreated(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        await conn.execute(
            insert(CHALLENGES).values(
                id=d["challenge_id"],
                title=d["title"],
                kind=d["kind"],
                target_value=d["target_value"],
                distance_m=d["distance_m"],
                starts_at=d["starts_at"],
                ends_at=d["ends_at"],
                tz=d["tz"],
                scope=d["scope"],
                club_id=d["club_id"],
                team_mode=d["team_mode"],
                description=d["description"],
                template=d["template"],
                created_by=d["created_by"],
                status="open",
                members=0,
            )
        )

    async def _on_ChallengeJoined(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        cid, rid = d["challenge_id"], d["runner_id"]
        key = and_(MEMBERS.c.challenge_id == cid, MEMBERS.c.runner_id == rid)
        if (await conn.execute(select(MEMBERS.c.runner_id).where(key))).first():
            await conn.execute(update(MEMBERS).where(key).values(active=True, joined_at=d["at"]))
        else:
            await conn.execute(
                insert(MEMBERS).values(
                    challenge_id=cid, runner_id=rid, joined_at=d["at"], active=True
                )
            )
        await conn.execute(
            update(CHALLENGES)
            .where(CHALLENGES.c.id == cid)
            .values(members=CHALLENGES.c.members + 1)
        )
        await self._recompute(conn, cid, rid, pos)

    async def _on_ChallengeLeft(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        cid, rid = d["challenge_id"], d["runner_id"]
        await conn.execute(
            update(MEMBERS)
            .where(MEMBERS.c.challenge_id == cid, MEMBERS.c.runner_id == rid)
            .values(active=False)
        )
        await conn.execute(
            update(CHALLENGES)
            .where(CHALLENGES.c.id == cid)
            .values(members=CHALLENGES.c.members - 1)
        )
        await self._recompute(conn, cid, rid, pos)

    async def _on_ChallengeClosed(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await conn.execute(
            update(CHALLENGES)
            .where(CHALLENGES.c.id == d["challenge_id"])
            .values(status="closed", closed_at=d["at"], standings=d["standings"])
        )

    # runs

    async def _on_RunRecorded(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await conn.execute(
            insert(RUNS).values(
                id=d["run_id"],
                runner_id=d["runner_id"],
                activity=d["activity"],
                status=d["status"],
                started_at=d["started_at"],
                ended_at=d["ended_at"],
                distance_m=d["distance_m"],
                elapsed_s=d["elapsed_s"],
                moving_s=d["moving_s"],
                best_efforts_s=d.get("best_efforts_s", {}),
                score=d["score"],
                flags=d["flags"],
                fix_count=d["fix_count"],
                recorded_position=pos,
                credited_distance_m=0.0,
                credited_elapsed_s=0.0,
                clean=False,
                appealed=False,
            )
        )

    async def _on_RunVerified(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        before = await self._credited_end(conn, d["run_id"])
        await conn.execute(
            update(RUNS)
            .where(RUNS.c.id == d["run_id"])
            .values(
                status="verified",
                credited_distance_m=d["distance_m"],
                credited_elapsed_s=d["elapsed_s"],
                credited_ended_at=d["ended_at"],
                best_efforts_s=d.get("best_efforts_s", {}),
                clean=d["clean"],
            )
        )
        await self._credit_changed(conn, d["runner_id"], {before, d["ended_at"]}, pos)

    async def _on_RunSentToReview(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await conn.execute(update(RUNS).where(RUNS.c.id == d["run_id"]).values(status="review"))

    async def _on_RunAppealed(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await conn.execute(
            update(RUNS).where(RUNS.c.id == d["run_id"]).values(status="review", appealed=True)
        )

    async def _on_RunRejected(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        before = await self._credited_end(conn, d["run_id"])
        await conn.execute(
            update(RUNS)
            .where(RUNS.c.id == d["run_id"])
            .values(
                status="rejected",
                credited_distance_m=0.0,
                credited_elapsed_s=0.0,
                credited_ended_at=None,
                clean=False,
            )
        )
        if before is not None:
            await self._credit_changed(conn, d["runner_id"], {before}, pos)

    # recomputation

    async def _credited_end(self, conn: AsyncConnection, run_id: str) -> float | None:
        stmt = select(RUNS.c.credited_ended_at).where(RUNS.c.id == run_id)
        value = (await conn.execute(stmt)).scalar_one_or_none()
        return None if value is None else float(value)

    async def _credit_changed(
        self, conn: AsyncConnection, runner_id: str, ends: set[float | None], pos: int
    ) -> None:
        """A credited run appeared, moved or vanished: refresh everything it touches."""
        times = [t for t in ends if t is not None]
        for t in times:
            stmt = (
                select(MEMBERS.c.challenge_id)
                .join(CHALLENGES, CHALLENGES.c.id == MEMBERS.c.challenge_id)
                .where(
                    MEMBERS.c.runner_id == runner_id,
                    CHALLENGES.c.starts_at <= t,
                    CHALLENGES.c.ends_at > t,
                )
            )
            for cid in (await conn.execute(stmt)).scalars().all():
                await self._recompute(conn, cid, runner_id, pos)
        for board in {weekly_board(t) for t in times}:
            start, end = _week_bounds(board)
            total = await self._sum_distance(conn, runner_id, start, end)
            await self._submit(conn, board, runner_id, total, pos, Direction.HIGHER)
        await self._xp_changed(conn, runner_id, pos)
        await self._club_boards(conn, runner_id, pos)

    async def _xp_changed(self, conn: AsyncConnection, runner_id: str, pos: int) -> None:
        """The XP board: credited runs plus finished drills."""
        rows = await conn.execute(
            select(RUNS.c.credited_distance_m, RUNS.c.activity).where(
                RUNS.c.runner_id == runner_id, RUNS.c.status == "verified"
            )
        )
        xp = sum(xp_for_run(r.credited_distance_m, r.activity) for r in rows)
        xp += await self._drill_xp(conn, runner_id)
        await self._submit(conn, XP_BOARD, runner_id, float(xp), pos, Direction.HIGHER)

    async def _sum_distance(
        self, conn: AsyncConnection, runner_id: str, start: float, end: float
    ) -> float:
        rows = await conn.execute(
            select(RUNS.c.credited_distance_m).where(
                RUNS.c.runner_id == runner_id,
                RUNS.c.status == "verified",
                RUNS.c.credited_ended_at >= start,
                RUNS.c.credited_ended_at < end,
            )
        )
        return round(float(sum(r.credited_distance_m for r in rows)), 2)

    async def _recompute(self, conn: AsyncConnection, cid: str, runner_id: str, pos: int) -> None:
        c = (await conn.execute(select(CHALLENGES).where(CHALLENGES.c.id == cid))).first()
        if c is None:
            return
        key = and_(PROGRESS.c.challenge_id == cid, PROGRESS.c.runner_id == runner_id)
        member = (
            await conn.execute(
                select(MEMBERS.c.active).where(
                    MEMBERS.c.challenge_id == cid, MEMBERS.c.runner_id == runner_id
                )
            )
        ).scalar_one_or_none()
        board = challenge_board(cid)
        if not member:
            await conn.execute(delete(PROGRESS).where(key))
            await self._remove(conn, board, runner_id)
            return
        kind = ch.Kind(c.kind)
        rows = await conn.execute(
            select(RUNS).where(
                RUNS.c.runner_id == runner_id,
                RUNS.c.status == "verified",
                RUNS.c.credited_ended_at >= c.starts_at,
                RUNS.c.credited_ended_at < c.ends_at,
            )
        )
        effort = ch.distance_name(c.distance_m)
        facts = [
            ch.RunFacts(
                r.id,
                r.credited_ended_at,
                r.credited_distance_m,
                r.credited_elapsed_s,
                (r.best_efforts_s or {}).get(effort) if effort else None,
            )
            for r in rows
        ]
        drills = 0
        if kind == ch.Kind.DRILLS:
            drills = await self.drills_finished(conn, runner_id, c.starts_at, c.ends_at)
        value = ch.progress_value(kind, facts, drills)
        if value is not None:
            value = round(value, 3)
        done = ch.is_complete(kind, value, c.target_value)
        old = (await conn.execute(select(PROGRESS).where(key))).first()
        reached_at = old.reached_at if old is not None and old.value == value else pos
        values = {"value": value, "runs": len(facts), "completed": done, "reached_at": reached_at}
        if old is None:
            await conn.execute(
                insert(PROGRESS).values(challenge_id=cid, runner_id=runner_id, **values)
            )
        else:
            await conn.execute(update(PROGRESS).where(key).values(**values))
        direction = Direction.LOWER if kind == ch.Kind.BEST_TIME else Direction.HIGHER
        if value is None:
            await self._remove(conn, board, runner_id)
        else:
            await self._submit(conn, board, runner_id, value, reached_at, direction)

    async def _submit(
        self,
        conn: AsyncConnection,
        board: str,
        runner_id: str,
        score: float,
        pos: int,
        direction: Direction,
    ) -> None:
        if await self.is_banned(conn, runner_id):  # banned runners never appear on a board
            await self._remove(conn, board, runner_id)
            return
        if isinstance(self.boards, SqlLeaderboards):
            await self.boards.submit_in(conn, board, runner_id, score, pos, direction=direction)
        else:  # Redis: absolute, idempotent writes; a retried batch writes the same values
            await self.boards.submit(board, runner_id, score, pos, direction=direction)

    async def _remove(self, conn: AsyncConnection, board: str, runner_id: str) -> None:
        if isinstance(self.boards, SqlLeaderboards):
            await self.boards.remove_in(conn, board, runner_id)
        else:
            await self.boards.remove(board, runner_id)

    async def _purge_runner(self, conn: AsyncConnection, runner_id: str) -> None:
        """Take a runner off every board they are on."""
        ends = (
            (
                await conn.execute(
                    select(RUNS.c.credited_ended_at).where(
                        RUNS.c.runner_id == runner_id, RUNS.c.credited_ended_at.is_not(None)
                    )
                )
            )
            .scalars()
            .all()
        )
        challenges = (
            (
                await conn.execute(
                    select(MEMBERS.c.challenge_id).where(MEMBERS.c.runner_id == runner_id)
                )
            )
            .scalars()
            .all()
        )
        clubs = (
            (
                await conn.execute(
                    select(CLUB_MEMBERS.c.club_id).where(CLUB_MEMBERS.c.runner_id == runner_id)
                )
            )
            .scalars()
            .all()
        )
        boards = {XP_BOARD, *(weekly_board(t) for t in ends)}
        boards |= {challenge_board(c) for c in challenges} | {club_board(c) for c in clubs}
        for board in sorted(boards):
            await self._remove(conn, board, runner_id)


def _week_bounds(board: str) -> tuple[float, float]:
    year, week = board.removeprefix("weekly:").split("-W")
    start, end = ch.iso_week_window(int(year), int(week), UTC)
    return start.timestamp(), end.timestamp()
