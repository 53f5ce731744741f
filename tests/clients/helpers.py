"""Accounts, races and fixes for SDK tests, made through the SDK itself (the public API)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from clients.sdk import RetroRunClient, RoomConnection
from server.config import Settings
from tests.api.helpers import create_user

PASSWORD = "backwards!"


def handle(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def signed_in(base_url: str, prefix: str = "sdk") -> RetroRunClient:
    api = RetroRunClient(base_url)
    name = handle(prefix)
    await api.register(name, PASSWORD)
    await api.login(name, PASSWORD)
    return api


async def moderator(base_url: str, settings: Settings) -> RetroRunClient:
    name = handle("mod")
    await asyncio.to_thread(create_user, settings, name, "moderator")
    api = RetroRunClient(base_url)
    await api.login(name, PASSWORD)
    return api


async def race(mod: RetroRunClient, *runners: RetroRunClient, distance_m: float = 400) -> str:
    created = await mod.create_race(
        "SDK reverse", distance_m, datetime.now(UTC) + timedelta(minutes=5)
    )
    for runner in runners:
        await runner.register_for_race(created["id"])
    return str(created["id"])


async def until_gun(room: RoomConnection, countdown: dict[str, object], after_s: float) -> float:
    """Wait (bounded) until the server clock is `after_s` past the gun; returns `start_at`."""
    start_at = float(countdown["start_at"])  # type: ignore[arg-type]
    await asyncio.wait_for(room.sleep_until(start_at + after_s), 60)
    return start_at


def fix(t: float, i: int) -> dict[str, float]:
    """Fix `i` of a runner moving north at about 2.5 m/s, five fixes a second."""
    return {"t": t, "lat": 52.5 + i * 4.5e-6, "lon": 13.4, "acc": 5.0, "heading": 180.0}


async def until(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Wait (bounded) for a condition the SDK's background tasks bring about."""
    try:
        async with asyncio.timeout(timeout_s):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
