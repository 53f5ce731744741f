"""The read models this server keeps, in one list (the runner and `retrorun rebuild` share it)."""

from __future__ import annotations

from server.boards.base import Leaderboards
from server.store.progress import CoreProjection
from server.store.projections import Projection


def build_projections(boards: Leaderboards) -> list[Projection]:
    """Every projection, writing its boards to `boards`."""
    return [CoreProjection(boards)]
