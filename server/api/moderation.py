"""Moderation: ban and unban runners (each an event with actor and reason)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from game import moderation
from server.commands import execute
from server.deps import EventStoreDep, Moderator, ProjectionsDep, WriteSessionDep
from server.errors import ApiError
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


@router.post("/runners/{runner_id}/ban", response_model=StandingOut)
async def ban(
    runner_id: RunnerId,
    body: DecisionIn,
    moderator: Moderator,
    session: WriteSessionDep,
    store: EventStoreDep,
    projections: ProjectionsDep,
) -> StandingOut:
    """Ban a runner: they cannot sign in, join, submit or connect, and leave every board."""
    cmd = moderation.Ban(runner_id, moderator.id, body.reason)
    return await _decide(runner_id, cmd, moderator, session, store, projections)


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
