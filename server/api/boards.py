"""Leaderboards: top N with pagination, and the runners around one runner."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlmodel import select

from server.boards.base import BoardEntry
from server.deps import BoardsDep, SessionDep
from server.errors import ApiError
from server.store.tables import Runner

router = APIRouter(prefix="/leaderboards", tags=["leaderboards"])

BOARD_RE = (
    r"^(xp:all|weekly:\d{4}-W\d{2}|challenge:[A-Za-z0-9_-]{1,100}|club:[A-Za-z0-9_-]{1,100})$"
)
BoardId = Annotated[
    str,
    Path(
        pattern=BOARD_RE,
        description=(
            "`xp:all`, `weekly:2026-W48` (distance, UTC ISO week), `challenge:<id>`, `club:<id>`"
        ),
        examples=["xp:all"],
    ),
]


class Entry(BaseModel):
    rank: int
    runner_id: str
    handle: str | None
    score: float = Field(
        description="metres (weekly, distance challenges), XP, or seconds (best time)"
    )


class Page(BaseModel):
    board: str
    total: int
    limit: int
    offset: int
    entries: list[Entry]


async def _with_handles(session: SessionDep, entries: list[BoardEntry]) -> list[Entry]:
    ids = [e.runner_id for e in entries]
    handles: dict[str, str] = {}
    if ids:
        rows = await session.exec(select(Runner.id, Runner.handle).where(Runner.id.in_(ids)))  # type: ignore[attr-defined]
        handles = {rid: handle for rid, handle in rows}
    return [
        Entry(rank=e.rank, runner_id=e.runner_id, handle=handles.get(e.runner_id), score=e.score)
        for e in entries
    ]


@router.get("/{board}", response_model=Page)
async def top(
    board: BoardId,
    boards: BoardsDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Page:
    """The top of a board, `limit` entries from `offset` (rank = offset + 1 onwards)."""
    entries = await boards.top(board, limit, offset)
    return Page(
        board=board,
        total=await boards.count(board),
        limit=limit,
        offset=offset,
        entries=await _with_handles(session, entries),
    )


@router.get("/{board}/around/{user_id}", response_model=Page)
async def around(
    board: BoardId,
    user_id: Annotated[str, Path(max_length=64)],
    boards: BoardsDep,
    session: SessionDep,
    radius: Annotated[int, Query(ge=0, le=50)] = 5,
) -> Page:
    """The runners ranked just above and below one runner."""
    entries = await boards.around(board, user_id, radius)
    if not entries:
        raise ApiError(404, "not_ranked", "that runner is not on this board")
    return Page(
        board=board,
        total=await boards.count(board),
        limit=len(entries),
        offset=entries[0].rank - 1,
        entries=await _with_handles(session, entries),
    )
