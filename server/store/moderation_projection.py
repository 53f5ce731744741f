"""Bans in the read models: a banned runner leaves every board, and returns on an unban."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.read_models import BanRow, ChallengeMemberRow, RunRow

BANS = BanRow.__table__  # type: ignore[attr-defined]
MEMBERS = ChallengeMemberRow.__table__  # type: ignore[attr-defined]
RUNS = RunRow.__table__  # type: ignore[attr-defined]


class ModerationHandlers:
    """Event handlers for runner standing (mixed into `CoreProjection`)."""

    async def _credit_changed(
        self, conn: AsyncConnection, runner_id: str, ends: set[float | None], pos: int
    ) -> None:
        raise NotImplementedError

    async def _recompute(self, conn: AsyncConnection, cid: str, runner_id: str, pos: int) -> None:
        raise NotImplementedError

    async def _purge_runner(self, conn: AsyncConnection, runner_id: str) -> None:
        raise NotImplementedError

    async def is_banned(self, conn: AsyncConnection, runner_id: str) -> bool:
        stmt = select(BANS.c.runner_id).where(BANS.c.runner_id == runner_id)
        return (await conn.execute(stmt)).first() is not None

    async def _refresh_runner(self, conn: AsyncConnection, runner_id: str, pos: int) -> None:
        """Recompute every board entry of a runner from the read models."""
        ends = (
            (
                await conn.execute(
                    select(RUNS.c.credited_ended_at).where(
                        RUNS.c.runner_id == runner_id, RUNS.c.status == "verified"
                    )
                )
            )
            .scalars()
            .all()
        )
        await self._credit_changed(conn, runner_id, {*ends, None}, pos)
        joined = (
            (
                await conn.execute(
                    select(MEMBERS.c.challenge_id).where(
                        MEMBERS.c.runner_id == runner_id, MEMBERS.c.active.is_(True)
                    )
                )
            )
            .scalars()
            .all()
        )
        for cid in joined:
            await self._recompute(conn, cid, runner_id, pos)

    async def _on_RunnerBanned(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        if not await self.is_banned(conn, d["runner_id"]):
            await conn.execute(insert(BANS).values(runner_id=d["runner_id"], reason=d["reason"]))
        await self._purge_runner(conn, d["runner_id"])

    async def _on_RunnerUnbanned(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await conn.execute(delete(BANS).where(BANS.c.runner_id == d["runner_id"]))
        await self._refresh_runner(conn, d["runner_id"], pos)
