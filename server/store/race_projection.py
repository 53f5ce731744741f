"""Race read models: the races table, and verified race finishes credited as runs.

A mixin of the core projection: a verified finish becomes a credited `race` run, so challenges,
weekly boards, XP and rewards count race kilometres exactly like uploaded runs. A finish the pace
check sent to review becomes a `race` run in review (the moderators' queue, with its flags) that
a moderator's approval credits and a rejection or disqualification withdraws.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.store.read_models import RaceRow, RunRow

RACES = RaceRow.__table__  # type: ignore[attr-defined]
RUNS = RunRow.__table__  # type: ignore[attr-defined]
_RACE_RUN_NS = uuid.UUID("0b7f3c52-1d4e-4f5a-8c6b-93a1e2d4f607")


def race_run_id(race_id: str, runner_id: str) -> str:
    """The id of the credited run a race finish becomes."""
    return str(uuid.uuid5(_RACE_RUN_NS, f"{race_id}:{runner_id}"))


async def race_of_run(conn: AsyncConnection, run_id: str) -> tuple[str, str] | None:
    """(race id, runner id) when `run_id` is the run a race finish became, else None."""
    stmt = select(RUNS.c.runner_id, RUNS.c.started_at).where(
        RUNS.c.id == run_id, RUNS.c.activity == "race"
    )
    row = (await conn.execute(stmt)).first()
    if row is None:
        return None
    # a race run starts at its race's gun: few races share one, and the id settles it
    same_gun = select(RACES.c.id).where(RACES.c.start_at == row.started_at)
    for race_id in (await conn.execute(same_gun)).scalars():
        if race_run_id(race_id, row.runner_id) == run_id:
            return race_id, row.runner_id
    return None


def _without(results: list[dict[str, Any]], runner_id: str) -> list[dict[str, Any]]:
    """Published results with one runner disqualified: the places after theirs move up."""
    placed = [r for r in results if r["place"] is not None and r["runner_id"] != runner_id]
    rest = [r for r in results if r["place"] is None and r["runner_id"] != runner_id]
    out = [{**r, "place": i} for i, r in enumerate(placed, start=1)]
    dq = {"place": None, "runner_id": runner_id, "time_s": None, "distance_m": None, "status": "dq"}
    return [*out, *rest, dq]


class RaceHandlers:
    """Event handlers for race streams (mixed into `CoreProjection`)."""

    async def _credit_changed(
        self, conn: AsyncConnection, runner_id: str, ends: set[float | None], pos: int
    ) -> None:
        raise NotImplementedError

    async def _reset_races(self, conn: AsyncConnection) -> None:
        await conn.execute(delete(RACES))

    async def _on_RaceScheduled(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await conn.execute(
            insert(RACES).values(
                id=d["race_id"],
                title=d["title"],
                distance_m=d["distance_m"],
                scheduled_at=d["scheduled_at"],
                capacity=d["capacity"],
                organiser_id=d["organiser_id"],
                club_id=d["club_id"],
                open=d["open"],
                status="scheduled",
                registered=0,
            )
        )

    async def _race_update(self, conn: AsyncConnection, race_id: str, **values: Any) -> None:
        await conn.execute(update(RACES).where(RACES.c.id == race_id).values(**values))

    async def _on_RaceEdited(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        columns = ("title", "scheduled_at", "capacity")
        values = {k: v for k, v in d["changes"].items() if k in columns}
        if values:
            await self._race_update(conn, d["race_id"], **values)

    async def _on_RunnerRegistered(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        await self._race_update(conn, d["race_id"], registered=RACES.c.registered + 1)

    async def _on_RunnerWithdrew(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await self._race_update(conn, d["race_id"], registered=RACES.c.registered - 1)

    async def _on_CountdownStarted(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        await self._race_update(conn, d["race_id"], status="countdown", start_at=d["start_at"])

    async def _on_RacePaused(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await self._race_update(conn, d["race_id"], status="paused")

    async def _on_RaceResumed(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await self._race_update(conn, d["race_id"], status="running")

    async def _on_RaceAborted(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        await self._race_update(conn, d["race_id"], status="aborted")

    async def _on_RaceFinished(self, conn: AsyncConnection, d: dict[str, Any], pos: int) -> None:
        race_id = d["race_id"]
        await self._race_update(conn, race_id, status="finished", results=d["results"])
        race = (await conn.execute(select(RACES).where(RACES.c.id == race_id))).first()
        if race is None or race.start_at is None:
            return
        for r in d["results"]:
            if r["status"] != "finished":
                continue
            ended_at = race.start_at + r["time_s"]
            await conn.execute(
                insert(RUNS).values(
                    id=race_run_id(race_id, r["runner_id"]),
                    runner_id=r["runner_id"],
                    activity="race",
                    status="verified",
                    started_at=race.start_at,
                    ended_at=ended_at,
                    distance_m=r["distance_m"],
                    elapsed_s=r["time_s"],
                    moving_s=r["time_s"],
                    credited_distance_m=r["distance_m"],
                    credited_elapsed_s=r["time_s"],
                    credited_ended_at=ended_at,
                    best_efforts_s={},
                    score=0,
                    flags=[],
                    clean=True,
                    fix_count=0,
                    appealed=False,
                    recorded_position=pos,
                )
            )
            await self._credit_changed(conn, r["runner_id"], {ended_at}, pos)

    async def _on_RunnerDisqualified(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        """A disqualification after the results withdraws the credited race run."""
        race = (await conn.execute(select(RACES).where(RACES.c.id == d["race_id"]))).first()
        if race is not None and race.results:  # results were published: re-rank them
            reranked = _without(race.results, d["runner_id"])
            await self._race_update(conn, d["race_id"], results=reranked)
        run_id = race_run_id(d["race_id"], d["runner_id"])
        await self._withdraw_race_run(conn, run_id, d["runner_id"], pos)

    async def _withdraw_race_run(
        self, conn: AsyncConnection, run_id: str, runner_id: str, pos: int
    ) -> None:
        """A race run no longer counts (and leaves the review queue)."""
        row = (await conn.execute(select(RUNS).where(RUNS.c.id == run_id))).first()
        if row is None or row.status == "rejected":
            return
        await conn.execute(
            update(RUNS)
            .where(RUNS.c.id == run_id)
            .values(
                status="rejected",
                credited_distance_m=0.0,
                credited_elapsed_s=0.0,
                credited_ended_at=None,
            )
        )
        if row.status == "verified":
            await self._credit_changed(conn, runner_id, {row.credited_ended_at}, pos)

    async def _on_RaceFinishSentToReview(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        """A doubted finish waits in the moderators' queue as a `race` run in review."""
        race = (await conn.execute(select(RACES).where(RACES.c.id == d["race_id"]))).first()
        if race is None or race.start_at is None:
            return
        await conn.execute(
            insert(RUNS).values(
                id=race_run_id(d["race_id"], d["runner_id"]),
                runner_id=d["runner_id"],
                activity="race",
                status="review",
                started_at=race.start_at,
                ended_at=race.start_at + d["time_s"],
                distance_m=d["distance_m"],
                elapsed_s=d["time_s"],
                moving_s=d["time_s"],
                credited_distance_m=0.0,
                credited_elapsed_s=0.0,
                credited_ended_at=None,
                best_efforts_s={},
                score=d["score"],
                flags=d["flags"],
                clean=False,
                fix_count=0,
                appealed=False,
                recorded_position=pos,
            )
        )

    async def _on_RaceFinishApproved(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        """A moderator credits the finish: it counts like a verified one."""
        await self._race_update(conn, d["race_id"], results=d["results"])
        run_id = race_run_id(d["race_id"], d["runner_id"])
        row = (await conn.execute(select(RUNS).where(RUNS.c.id == run_id))).first()
        if row is None:
            return
        await conn.execute(
            update(RUNS)
            .where(RUNS.c.id == run_id)
            .values(
                status="verified",
                credited_distance_m=row.distance_m,
                credited_elapsed_s=row.elapsed_s,
                credited_ended_at=row.ended_at,
            )
        )
        await self._credit_changed(conn, d["runner_id"], {row.ended_at}, pos)

    async def _on_RaceFinishRejected(
        self, conn: AsyncConnection, d: dict[str, Any], pos: int
    ) -> None:
        await self._race_update(conn, d["race_id"], results=d["results"])
        run_id = race_run_id(d["race_id"], d["runner_id"])
        await self._withdraw_race_run(conn, run_id, d["runner_id"], pos)
