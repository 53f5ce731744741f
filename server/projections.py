"""The read models this server keeps, in one list (the runner and `retrorun rebuild` share it)."""

from __future__ import annotations

from server.config import Settings
from server.store.projections import Projection


def build_projections(settings: Settings) -> list[Projection]:
    """Every projection, configured for these settings."""
    return []
