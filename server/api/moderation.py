"""Moderation: ban and unban runners (each an event with actor and reason)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlmodel.ext.asyncio.session import AsyncSession

from game import moderation
from server.commands import execute
from server.deps import EventStoreDep, Moderator, ProjectionsDep, WriteSessionDep
from server.errors import ApiError
from server.rooms.backplane.base import Outbound
from server.rooms.protocol import error
from server.store.drill_projection import DRILLS
from server.store.race_projection import RACES
from server.store.tables import Runner

router = APIRouter(prefix="/moderation", tags=["moderation"])
RunnerId = Annotated[str, Path(max_length=36)]


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=500)


class StandingOut(BaseModel):
    runner_id: str
    banned: bool


async def _decide(
    runner_id: str,
    command: moderation.Ban | moderation.Unban,
    moderator: Moderator,
    session: WriteSessionDep,
    store: EventStoreDep,
    projections: ProjectionsDep,
) -> StandingOut:
    async with AsyncSession(store.engine) as reader:  # a short read: the append needs the lock
        found = await reader.get(Runner, runner_id)
        if found is None:
            raise ApiError(404, "not_found", f"no runner {runner_id!r}")
        if found.role == "admin" and moderator.role != "admin":
            raise ApiError(403, "forbidden", "only admins act on admins")
    await execute(store, f"runner-{runner_id}", moderation, command, meta={"actor": moderator.id})
    target = await session.get(Runner, runner_id)
    assert target is not None
    target.banned = isinstance(command, moderation.Ban)
    session.add(target)
    await session.commit()
    await projections.run_once()
    return StandingOut(runner_id=runner_id, banned=target.banned)


async def _close_sockets(request: Request, store: EventStoreDep, runner_id: str) -> None:
    """A ban reaches sockets opened before it: every live room closes the runner's with 4503
    (`error banned` first), on whichever server process holds them."""
    rooms = getattr(request.state, "rooms", None)
    if rooms is None:
        return
    async with store.engine.connect() as conn:
        live = await conn.execute(
            select(RACES.c.id).where(
                RACES.c.status.in_(("scheduled", "countdown", "running", "paused"))
            )
        )
        ids = list(live.scalars())
        drills = await conn.execute(select(DRILLS.c.id).where(DRILLS.c.status != "finished"))
        ids += list(drills.scalars())
    text = error("banned", "this account is banned")
    for room_id in ids:
        await rooms.backplane.publish(
            room_id, Outbound("direct", text, audience="runner", to=runner_id)
        )
        await rooms.backplane.publish(
            room_id, Outbound("close", "", audience="runner", to=runner_id, close_code=4503)
        )


@router.post("/runners/{runner_id}/ban", response_model=StandingOut)
async def ban(
    runner_id: RunnerId,
    body: DecisionIn,
    moderator: Moderator,
    session: WriteSessionDep,
    store: EventStoreDep,
    projections: ProjectionsDep,
    request: Request,
) -> StandingOut:
    """Ban a runner: they cannot sign in, join, submit or connect (open sockets are closed with
    4503), and leave every board."""
    cmd = moderation.Ban(runner_id, moderator.id, body.reason)
    out = await _decide(runner_id, cmd, moderator, session, store, projections)
    await _close_sockets(request, store, runner_id)
    return out


@router.post("/runners/{runner_id}/unban", response_model=StandingOut)
async def unban(
    runner_id: RunnerId,
    body: DecisionIn,
    moderator: Moderator,
    session: WriteSessionDep,
    store: EventStoreDep,
    projections: ProjectionsDep,
) -> StandingOut:
    """Lift a ban: the runner's results return to the boards."""
    cmd = moderation.Unban(runner_id, moderator.id, body.reason)
    return await _decide(runner_id, cmd, moderator, session, store, projections)
