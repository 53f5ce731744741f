"""Club read models and the club leaderboards (members by total credited distance)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from game.ranking import Direction
from server.store.read_models import ClubMemberRow, ClubRow, RunRow

CLUBS = ClubRow.__table__  # type: ignore[attr-defined]
CLUB_MEMBERS = ClubMemberRow.__table__  # type: ignore[attr-defined]
RUNS = RunRow.__table__  # type: ignore[attr-defined]


def club_board(club_id: str) -> str:
    return f"club:{club_id}"


class ClubHandlers:
    """Event handlers for club streams (mixed into `CoreProjection`)."""

    async def _submit(
        self,
        conn: AsyncConnection,
        board: str,
        runner_id: str,
        score: float,
        pos: int,
        direction: Direction,
    ) -> None:
        raise NotImplementedError

    async def _remove(self, conn: AsyncConnection, board: str, runner_id: str) -> None:
        raise NotImplementedError

    async def _reset_clubs(self, conn: AsyncConnection) -> None:
        await conn.execute(delete(CLUB_MEMBERS))
        await conn.execute(delete(CLUBS))

    async def _club_boards(self, conn: AsyncConnection, runner_id: str, pos: int) -> None:
        """Refresh the runner's total on every club board they are a member of."""
        clubs = (
            (
                await conn.execute(
                    select(CLUB_MEMBERS.c.club_id).where(
                        CLUB_MEMBERS.c.runner_id == runner_id, CLUB_MEMBERS.c.invited.is_(False)
                    )
                )
            )
            .scalars()
            .all()
        )
        if not clubs:
            return
        total = await self._total_distance(conn, runner_id)
        for club_id in clubs:
            await self._submit(conn, club_board(club_id), runner_id, total, pos, Direction.HIGHER)

    async def _total_distance(self, conn: AsyncConnection, runner_id: str) -> float:
        stmt = select(func.coalesce(func.sum(RUNS.c.credited_distance_m), 0.0)).where(
            RUNS.c.runner_id == runner_id, RUNS.c.status == "verified"
        )
        return round(float((await conn.execute(stmt)).scalar_one()), 2)

    async def _on_ClubCreated(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await conn.execute(
            insert(CLUBS).values(
                id=d["club_id"],
                name=d["name"],
                owner_id=d["owner_id"],
                join_code=d["join_code"],
                members=1,
            )
        )
        await conn.execute(
            insert(CLUB_MEMBERS).values(
                club_id=d["club_id"], runner_id=d["owner_id"], role="owner", invited=False
            )
        )
        await self._join_board(conn, d["club_id"], d["owner_id"], pos)

    async def _join_board(
        self, conn: AsyncConnection, club_id: str, runner_id: str, pos: int
    ) -> None:
        total = await self._total_distance(conn, runner_id)
        await self._submit(conn, club_board(club_id), runner_id, total, pos, Direction.HIGHER)

    def _member(self, d: dict[str, Any]) -> Any:
        return and_(
            CLUB_MEMBERS.c.club_id == d["club_id"], CLUB_MEMBERS.c.runner_id == d["runner_id"]
        )

    async def _on_ClubMemberInvited(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        await conn.execute(
            insert(CLUB_MEMBERS).values(
                club_id=d["club_id"],
                runner_id=d["runner_id"],
                role="member",
                invited=True,
                invited_by=d["by"],
                invited_at=d.get("at"),
            )
        )

    async def _on_ClubInviteDeclined(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        await conn.execute(
            delete(CLUB_MEMBERS).where(self._member(d), CLUB_MEMBERS.c.invited.is_(True))
        )

    async def _on_ClubMemberJoined(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        invited = (
            await conn.execute(
                select(CLUB_MEMBERS.c.runner_id).where(
                    self._member(d), CLUB_MEMBERS.c.invited.is_(True)
                )
            )
        ).first()
        if invited is not None:  # by invitation, or by code while an invitation was pending
            await conn.execute(
                update(CLUB_MEMBERS)
                .where(self._member(d))
                .values(invited=False, invited_by=None, invited_at=None)
            )
        else:
            await conn.execute(
                insert(CLUB_MEMBERS).values(
                    club_id=d["club_id"], runner_id=d["runner_id"], role="member", invited=False
                )
            )
        await conn.execute(
            update(CLUBS).where(CLUBS.c.id == d["club_id"]).values(members=CLUBS.c.members + 1)
        )
        await self._join_board(conn, d["club_id"], d["runner_id"], pos)

    async def _gone(self, conn: AsyncConnection, d: dict[str, Any]) -> None:
        await conn.execute(delete(CLUB_MEMBERS).where(self._member(d)))
        await conn.execute(
            update(CLUBS).where(CLUBS.c.id == d["club_id"]).values(members=CLUBS.c.members - 1)
        )
        await self._remove(conn, club_board(d["club_id"]), d["runner_id"])

    async def _on_ClubMemberLeft(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await self._gone(conn, d)

    async def _on_ClubMemberRemoved(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        await self._gone(conn, d)

    async def _on_ClubRoleChanged(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await conn.execute(update(CLUB_MEMBERS).where(self._member(d)).values(role=d["role"]))

    async def _on_ClubOwnershipTransferred(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        cid = d["club_id"]
        await conn.execute(
            update(CLUB_MEMBERS)
            .where(CLUB_MEMBERS.c.club_id == cid, CLUB_MEMBERS.c.runner_id == d["from_id"])
            .values(role="admin")
        )
        await conn.execute(
            update(CLUB_MEMBERS)
            .where(CLUB_MEMBERS.c.club_id == cid, CLUB_MEMBERS.c.runner_id == d["to_id"])
            .values(role="owner")
        )
        await conn.execute(update(CLUBS).where(CLUBS.c.id == cid).values(owner_id=d["to_id"]))

    async def _on_ClubJoinCodeRotated(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        await conn.execute(
            update(CLUBS).where(CLUBS.c.id == d["club_id"]).values(join_code=d["join_code"])
        )
