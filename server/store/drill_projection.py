"""Drill read models: the drills table and each participant's finished-drill result.

A mixin of the core projection. A `DrillFinished` event writes one `drill_results` row per
scored participant; those rows feed drill-count challenges (`Kind.DRILLS`: finished drills whose
finish lies in the challenge window), the XP board (`xp_per_drill` per finished drill) and the
profile's drill badges (server/api/profile.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from game import challenges as ch
from game.rewards import DEFAULT_POLICY
from server.store.read_models import (
    ChallengeMemberRow,
    ChallengeRow,
    DrillResultRow,
    DrillRow,
)

DRILLS = DrillRow.__table__  # type: ignore[attr-defined]
DRILL_RESULTS = DrillResultRow.__table__  # type: ignore[attr-defined]
_CHALLENGES = ChallengeRow.__table__  # type: ignore[attr-defined]
_MEMBERS = ChallengeMemberRow.__table__  # type: ignore[attr-defined]


class DrillHandlers:
    """Event handlers for drill streams (mixed into `CoreProjection`)."""

    async def _recompute(self, conn: AsyncConnection, cid: str, runner_id: str, pos: int) -> None:
        raise NotImplementedError

    async def _xp_changed(self, conn: AsyncConnection, runner_id: str, pos: int) -> None:
        raise NotImplementedError

    async def _reset_drills(self, conn: AsyncConnection) -> None:
        await conn.execute(delete(DRILL_RESULTS))
        await conn.execute(delete(DRILLS))

    async def drills_finished(
        self, conn: AsyncConnection, runner_id: str, start: float, end: float
    ) -> int:
        """Finished drills the runner was scored in, finishing in [start, end)."""
        stmt = select(func.count()).where(
            DRILL_RESULTS.c.runner_id == runner_id,
            DRILL_RESULTS.c.finished_at >= start,
            DRILL_RESULTS.c.finished_at < end,
        )
        return int((await conn.execute(stmt)).scalar_one())

    async def _drill_xp(self, conn: AsyncConnection, runner_id: str) -> int:
        stmt = select(func.count()).where(DRILL_RESULTS.c.runner_id == runner_id)
        return DEFAULT_POLICY.xp_per_drill * int((await conn.execute(stmt)).scalar_one())

    async def _on_DrillScheduled(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await conn.execute(
            insert(DRILLS).values(
                id=d["drill_id"],
                title=d["title"],
                coach_id=d["coach_id"],
                club_id=d["club_id"],
                status="scheduled",
                participants=0,
            )
        )

    async def _on_DrillStarted(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await conn.execute(
            update(DRILLS)
            .where(DRILLS.c.id == d["drill_id"])
            .values(status="running", start_at=d["start_at"])
        )

    async def _on_DrillFinished(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        drill_id, at, sync = d["drill_id"], float(d["at"]), float(d["sync_score"])
        scores: list[dict[str, Any]] = d["scores"]
        await conn.execute(
            update(DRILLS)
            .where(DRILLS.c.id == drill_id)
            .values(status="finished", finished_at=at, sync_score=sync, participants=len(scores))
        )
        if not scores:
            return
        await conn.execute(
            insert(DRILL_RESULTS),
            [
                {
                    "drill_id": drill_id,
                    "runner_id": s["participant_id"],
                    "finished_at": at,
                    "hits": s["hits"],
                    "misses": s["misses"],
                    "median_ms": s["median_ms"],
                    "best_ms": s["best_ms"],
                    "steadiness": s["steadiness"],
                    "sync_score": sync,
                }
                for s in scores
            ],
        )
        for s in scores:
            runner_id = s["participant_id"]
            stmt = (
                select(_MEMBERS.c.challenge_id)
                .join(_CHALLENGES, _CHALLENGES.c.id == _MEMBERS.c.challenge_id)
                .where(
                    _MEMBERS.c.runner_id == runner_id,
                    _MEMBERS.c.active.is_(True),
                    _CHALLENGES.c.kind == ch.Kind.DRILLS.value,
                    _CHALLENGES.c.starts_at <= at,
                    _CHALLENGES.c.ends_at > at,
                )
            )
            for cid in (await conn.execute(stmt)).scalars().all():
                await self._recompute(conn, cid, runner_id, pos)
            await self._xp_changed(conn, runner_id, pos)
