"""Leaderboards: one interface (`base.Leaderboards`), a SQL and a Redis backend.

`leaderboards_from_settings` picks the backend the way the backplane does: Redis sorted sets when
`RETRORUN_REDIS_URL` is set, else the `board_entries` table of the main database.
"""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from server.boards.base import BoardEntry, Leaderboards
from server.boards.redis import RedisLeaderboards
from server.boards.sql import SqlLeaderboards
from server.config import Settings

__all__ = [
    "BoardEntry",
    "Leaderboards",
    "RedisLeaderboards",
    "SqlLeaderboards",
    "leaderboards_from_settings",
]


def leaderboards_from_settings(
    settings: Settings, engine: AsyncEngine, redis: Redis | None
) -> Leaderboards:
    """The Redis backend when `settings.redis_url` is set (it needs the client), else SQL."""
    if settings.redis_url:
        if redis is None:
            raise ValueError("RETRORUN_REDIS_URL is set but no Redis client was given")
        return RedisLeaderboards(redis)
    return SqlLeaderboards(engine)
