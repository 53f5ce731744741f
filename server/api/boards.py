"""Leaderboards: top N with pagination, and the runners around one runner."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.boards.base import BoardEntry, BoardPage, Leaderboards
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


async def _handles(engine: AsyncEngine, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(RUNNERS.c.id, RUNNERS.c.handle).where(RUNNERS.c.id.in_(ids))
        )
        return {rid: handle for rid, handle in rows}


async def _with_handles(engine: AsyncEngine, entries: list[BoardEntry]) -> list[Entry]:
    handles = await _handles(engine, [e.runner_id for e in entries])
    return [
        Entry(rank=e.rank, runner_id=e.runner_id, handle=handles.get(e.runner_id), score=e.score)
        for e in entries
    ]


@dataclass(frozen=True, slots=True)
class CachedPage:
    """One rendered page: its body, the body's ETag and the board version it was rendered at."""

    version: str
    expires: float
    body: bytes
    etag: str


#: What a shared version check found: the page it held, and None (current) or a new board page.
Checked = tuple[CachedPage | None, BoardPage | None]


class PageCache:
    """Rendered board pages, encoded once and served while they are current.

    Current means: the board's version has not moved (Redis keeps one per board and every process
    bumps it on every write, so the check is exact across processes), or, on a backend without
    versions (SQL, the single-process default), this process's projection runner has applied no
    event since. Handles come from the accounts table, which no board version covers (a deleted
    account loses its handle), so a page is also re-rendered after `ttl_s` at the latest.

    Version checks are shared too (`check`): requests for one page that arrive while a check is
    in flight wait for the next one, which starts when that one ends. So every request still gets
    an answer read after it arrived (a run another server just ranked is on it), but a busy page
    costs about one Redis round trip per round-trip time, not one per request.
    """

    def __init__(
        self,
        ttl_s: float = 1.0,
        max_pages: int = 2048,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_pages = max_pages
        self.clock = clock
        self._pages: dict[tuple[str, int, int], CachedPage] = {}
        self._rendering: dict[tuple[str, int, int, str], asyncio.Future[CachedPage]] = {}
        #: Per page: the check waiting to start (every waiter arrived before it starts) ...
        self._next_check: dict[tuple[str, int, int], asyncio.Future[Checked]] = {}
        #: ... and the pages whose check is running now.
        self._checking: set[tuple[str, int, int]] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # strong references to running checks

    def get(self, key: tuple[str, int, int]) -> CachedPage | None:
        """The page cached under `key`, unless it outlived `ttl_s`."""
        hit = self._pages.get(key)
        return hit if hit is not None and hit.expires > self.clock() else None

    async def check(
        self,
        key: tuple[str, int, int],
        read: Callable[[CachedPage | None], Awaitable[BoardPage | None]],
    ) -> Checked:
        """The page held when a check started after this call, and what `read(held)` gave: None
        when `held` is current, else the board page to render. One check at a time per page."""
        future = self._next_check.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._next_check[key] = future
            if key not in self._checking:
                self._start_check(key, read)
        return await asyncio.shield(future)

    def _start_check(
        self,
        key: tuple[str, int, int],
        read: Callable[[CachedPage | None], Awaitable[BoardPage | None]],
    ) -> None:
        future = self._next_check.pop(key)
        self._checking.add(key)
        held = self.get(key)

        async def run() -> None:
            try:
                future.set_result((held, await read(held)))
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
                if not isinstance(exc, Exception):
                    raise
            finally:
                self._checking.discard(key)
                if key in self._next_check:  # requests arrived meanwhile: their turn
                    self._start_check(key, read)

        task = asyncio.create_task(run(), name="board-page-check")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def render(
        self, key: tuple[str, int, int], version: str, render: Callable[[], Awaitable[bytes]]
    ) -> CachedPage:
        """Render the page at `version` once, shared by every request that missed at once."""
        flight = (*key, version)
        pending = self._rendering.get(flight)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[CachedPage] = asyncio.get_running_loop().create_future()
        self._rendering[flight] = future
        try:
            now = self.clock()
            body = await render()
            page = CachedPage(version, now + self.ttl_s, body, _etag(body))
            if len(self._pages) >= self.max_pages:
                self._pages.clear()
            self._pages[key] = page
            future.set_result(page)
            return page
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self._rendering[flight]


def _etag(body: bytes) -> str:
    """A strong validator of the body itself: equal bodies, equal tags, in every process."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: `*`, or any listed tag equal under weak comparison."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


async def _render(
    engine: AsyncEngine, board: str, limit: int, offset: int, page: BoardPage
) -> bytes:
    """The `Page` document, encoded with orjson (the rows are built here, not validated)."""
    handles = await _handles(engine, [e.runner_id for e in page.entries])
    doc = {
        "board": board,
        "total": page.total,
        "limit": limit,
        "offset": offset,
        "entries": [
            {
                "rank": e.rank,
                "runner_id": e.runner_id,
                "handle": handles.get(e.runner_id),
                "score": e.score,
            }
            for e in page.entries
        ],
    }
    return orjson.dumps(doc)


_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not Modified: the `If-None-Match` tag is still current"}
}


@router.get("/{board}", response_model=Page, responses=_NOT_MODIFIED)
async def top(
    request: Request,
    board: BoardId,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    if_none_match: Annotated[str | None, Header(description="an `ETag` from before")] = None,
) -> Response:
    """The top of a board, `limit` entries from `offset` (rank = offset + 1 onwards).

    Every page carries an `ETag`; send it back in `If-None-Match` to get `304 Not Modified`
    while the page is unchanged. A new result shows up at once; a handle change within a second.
    """
    # The lifespan state is read here, not through dependencies: FastAPI runs plain-function
    # dependencies in its thread pool, four thread hops per request on the hottest route.
    state = request.state
    boards: Leaderboards = state.boards
    cache: PageCache = state.board_pages
    key = (board, limit, offset)
    if boards.shared_versions:

        async def check(held: CachedPage | None) -> BoardPage | None:
            return await boards.page(board, limit, offset, unless=held.version if held else None)

        cached, read = await cache.check(key, check)
        if read is None:
            assert cached is not None  # None only answers a version we sent
            page = cached
        else:
            fresh = read
            page = await cache.render(
                key,
                fresh.version or "",
                lambda: _render(state.engine, board, limit, offset, fresh),
            )
    else:
        version = f"local:{state.projections.applied}"
        cached = cache.get(key)
        if cached is not None and cached.version == version:
            page = cached
        else:

            async def read_and_render() -> bytes:
                read = await boards.page(board, limit, offset)
                assert read is not None  # no version given: always read
                return await _render(state.engine, board, limit, offset, read)

            page = await cache.render(key, version, read_and_render)
    headers = {"ETag": page.etag, "Cache-Control": "no-cache"}
    if if_none_match is not None and _matches(if_none_match, page.etag):
        return Response(status_code=304, headers=headers)
    return Response(page.body, media_type="application/json", headers=headers)


@router.get("/{board}/around/{user_id}", response_model=Page)
async def around(
    request: Request,
    board: BoardId,
    user_id: Annotated[str, Path(max_length=64)],
    radius: Annotated[int, Query(ge=0, le=50)] = 5,
) -> Page:
    """The runners ranked just above and below one runner."""
    boards: Leaderboards = request.state.boards  # not a dependency: no thread-pool hop (`top`)
    engine: AsyncEngine = request.state.engine
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
