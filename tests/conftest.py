"""Shared fixtures: real PostgreSQL and Redis (skipped on a laptop without them, required in CI)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

PG_ADMIN_URL = os.environ.get("RETRORUN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_TEST_URL = os.environ.get("RETRORUN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: The weekly challenge rotates by calendar week (game/challenges.py), and a run ranks on some
#: templates only (a 1.5 km run has no mile time; runs do not count in a drill week): the
#: servers the tests start (settings read the environment) rotate through the distance
#: template alone, so what a test asserts does not depend on the week it runs in.
os.environ.setdefault("RETRORUN_WEEKLY_ROTATION", '["reverse-10k"]')


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking set-up (that may call asyncio.run) outside any running event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def require_tools(present: bool, what: str) -> None:
    """Skip with a reason on a laptop without `what` (local binaries); fail loudly in CI."""
    if present:
        return
    if IN_CI:
        pytest.fail(f"{what} missing, and CI=true requires it", pytrace=False)
    pytest.skip(f"{what} missing (install it to run these tests; CI runs them)")


def require_service(name: str, host: str, port: int) -> None:
    """Skip with a reason on a laptop without the service; fail loudly in CI."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}, and CI=true requires it", pytrace=False)
    pytest.skip(f"{message} (start it to run these tests; CI runs them)")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncio

    import asyncpg

    name = f"retrorun_test_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN_URL

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    in_thread(asyncio.run, run(f'CREATE DATABASE "{name}"'))
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        in_thread(asyncio.run, run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_TEST_URL
