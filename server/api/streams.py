"""Audit: the full event history of any stream, for moderators."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from server.deps import EventStoreDep, Moderator
from server.errors import ApiError

router = APIRouter(tags=["audit"])


class EventOut(BaseModel):
    position: int
    version: int
    type: str
    schema_version: int
    data: dict[str, Any]
    meta: dict[str, Any]
    recorded_at: datetime


@router.get("/streams/{stream_id}/events", response_model=list[EventOut])
async def stream_events(
    stream_id: Annotated[str, Path(max_length=200)],
    _moderator: Moderator,
    store: EventStoreDep,
    after_version: Annotated[int, Query(ge=0)] = 0,
) -> list[EventOut]:
    """Moderators: every event of a stream (`run-<id>`, `challenge-<id>` ...), actor and time."""
    events = await store.load(stream_id, after_version)
    if not events and after_version == 0:
        raise ApiError(404, "not_found", f"no stream {stream_id!r}")
    return [
        EventOut(
            position=e.position,
            version=e.version,
            type=e.type,
            schema_version=e.schema_version,
            data=e.data,
            meta=e.meta,
            recorded_at=e.recorded_at,
        )
        for e in events
    ]
