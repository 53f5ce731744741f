"""Crypto-shredding: personal text in events is encrypted with a per-runner key.

Events are immutable, but a runner may delete their account. Free text a runner writes into the
log (an appeal message) is stored as `enc:v1:<Fernet token>` under that runner's key; deleting the
key makes every such token unreadable, while the rest of the log stays intact.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from server.store.db import writer
from server.store.tables import RunnerKey

KEYS = RunnerKey.__table__  # type: ignore[attr-defined]
PREFIX = "enc:v1:"
SHREDDED = "[deleted with the runner's account]"


async def _key(engine: AsyncEngine, runner_id: str, *, create: bool) -> bytes | None:
    async with engine.connect() as raw:
        conn = await writer(raw) if create else raw
        async with conn.begin():
            stmt = select(KEYS.c.key).where(KEYS.c.runner_id == runner_id)
            key = (await conn.execute(stmt)).scalar_one_or_none()
            if key is None and create:
                key = Fernet.generate_key()
                await conn.execute(insert(KEYS).values(runner_id=runner_id, key=key))
    return None if key is None else bytes(key)


async def encrypt_for(engine: AsyncEngine, runner_id: str, text: str) -> str:
    """Encrypt text under the runner's key (created on first use)."""
    key = await _key(engine, runner_id, create=True)
    assert key is not None
    return PREFIX + Fernet(key).encrypt(text.encode()).decode()


async def decrypt_for(engine: AsyncEngine, runner_id: str, value: str) -> str:
    """The plain text, or a placeholder once the key was shredded; non-encrypted text as is."""
    if not value.startswith(PREFIX):
        return value
    key = await _key(engine, runner_id, create=False)
    if key is None:
        return SHREDDED
    try:
        return Fernet(key).decrypt(value[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        return SHREDDED


async def shred(engine: AsyncEngine, runner_id: str) -> None:
    """Destroy the runner's key."""
    async with engine.connect() as raw:
        conn = await writer(raw)
        async with conn.begin():
            await conn.execute(delete(KEYS).where(KEYS.c.runner_id == runner_id))
