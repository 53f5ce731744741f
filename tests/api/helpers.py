"""Small builders shared by the API tests."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from sqlalchemy.exc import OperationalError

from game.generate import Profile, generate
from game.track import Track
from server.cli import _create_users
from server.config import Settings
from tests.conftest import in_thread


def points(track: Track) -> list[dict[str, Any]]:
    """A track as the JSON `points` of `POST /api/v1/runs`."""
    names = {
        "acc": track.acc_m,
        "speed": track.speed_mps,
        "course": track.course_deg,
        "heading": track.heading_deg,
        "cadence": track.cadence_spm,
    }
    out = []
    for i in range(len(track)):
        p: dict[str, Any] = {
            "t": float(track.t[i]),
            "lat": float(track.lat[i]),
            "lon": float(track.lon[i]),
        }
        for key, col in names.items():
            v = float(col[i])
            if not math.isnan(v):
                p[key] = v
        if track.mock[i]:
            p["mock"] = True
        out.append(p)
    return out


def recent_track(profile: Profile, seed: int, distance_m: float = 1500.0) -> Track:
    """A generated track that ended about a minute ago."""
    probe = generate(profile, seed, 0.0, distance_m)
    duration = float(probe.t[-1] - probe.t[0])
    return generate(profile, seed, time.time() - duration - 60.0, distance_m)


def create_user(settings: Settings, handle: str, role: str) -> None:
    """An account made directly in the database, beside a running server: a busy SQLite file
    ("database is locked" while the server holds the write lock) is retried, as the server's
    own writers do."""
    for attempt in range(10):
        try:
            in_thread(
                asyncio.run,
                _create_users(settings, [(handle, "backwards!", role)], skip_existing=False),
            )
            return
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == 9:
                raise
            time.sleep(0.2 * (attempt + 1))
