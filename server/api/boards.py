"""Leaderboards: top N with pagination, and the runners around one runner."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from server.boards.base import BoardEntry
from server.deps import BoardsDep, EngineDep, ProjectionsDep
from server.errors import ApiError
from server.store.tables import Runner

router = APIRouter(prefix="/leaderboards", tags=["leaderboards"])
RUNNERS = Runner.__table__  # type: ignore[attr-defined]

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


async def _with_handles(engine: EngineDep, entries: list[BoardEntry]) -> list[Entry]:
    ids = [e.runner_id for e in entries]
    handles: dict[str, str] = {}
    if ids:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(RUNNERS.c.id, RUNNERS.c.handle).where(RUNNERS.c.id.in_(ids))
            )
            handles = {rid: handle for rid, handle in rows}
    return [
        Entry(rank=e.rank, runner_id=e.runner_id, handle=handles.get(e.runner_id), score=e.score)
        for e in entries
    ]


class PageCache:
    """Rendered board pages, encoded once and served until the read models move (this process's
    projection runner applied events) or `ttl_s` passes (other processes' writes)."""

    def __init__(self, ttl_s: float = 1.0, max_pages: int = 2048) -> None:
        self.ttl_s = ttl_s
        self.max_pages = max_pages
        self._pages: dict[tuple[str, int, int], tuple[int, float, bytes]] = {}
        self._rendering: dict[tuple[str, int, int, int], asyncio.Future[bytes]] = {}

    async def page(
        self,
        key: tuple[str, int, int],
        version: int,
        render: Callable[[], Awaitable[bytes]],
    ) -> bytes:
        """The cached page, or one render shared by every request that missed at once."""
        now = time.monotonic()
        body = self.get(key, version, now)
        if body is not None:
            return body
        flight = (*key, version)
        pending = self._rendering.get(flight)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._rendering[flight] = future
        try:
            body = await render()
            self.put(key, version, now, body)
            future.set_result(body)
            return body
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self._rendering[flight]

    def get(self, key: tuple[str, int, int], version: int, now: float) -> bytes | None:
        hit = self._pages.get(key)
        if hit is None or hit[0] != version or hit[1] <= now:
            return None
        return hit[2]

    def put(self, key: tuple[str, int, int], version: int, now: float, body: bytes) -> None:
        if len(self._pages) >= self.max_pages:
            self._pages.clear()
        self._pages[key] = (version, now + self.ttl_s, body)


def get_page_cache(request: Request) -> PageCache:
    cache: PageCache = request.state.board_pages
    return cache


PageCacheDep = Annotated[PageCache, Depends(get_page_cache)]


@router.get("/{board}", response_model=Page)
async def top(
    board: BoardId,
    boards: BoardsDep,
    engine: EngineDep,
    projections: ProjectionsDep,
    cache: PageCacheDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    """The top of a board, `limit` entries from `offset` (rank = offset + 1 onwards).

    Pages are cached for at most a second, and never past a change this server applied.
    """

    async def render() -> bytes:
        entries = await boards.top(board, limit, offset)
        page = Page(
            board=board,
            total=await boards.count(board),
            limit=limit,
            offset=offset,
            entries=await _with_handles(engine, entries),
        )
        return page.model_dump_json().encode()

    body = await cache.page((board, limit, offset), projections.applied, render)
    return Response(body, media_type="application/json")


@router.get("/{board}/around/{user_id}", response_model=Page)
async def around(
    board: BoardId,
    user_id: Annotated[str, Path(max_length=64)],
    boards: BoardsDep,
    engine: EngineDep,
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
        entries=await _with_handles(engine, entries),
    )
