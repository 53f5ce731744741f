"""Schema migrations with Alembic, callable from the command line and the app's start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations

SCRIPT_LOCATION = Path(migrations.__file__).resolve().parent


class SchemaOutdated(RuntimeError):
    """The database schema is behind the code: run `retrorun migrate`."""


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema up to `revision` (blocking: run it in a thread from async code)."""
    command.upgrade(alembic_config(database_url), revision)


def head_revision() -> str | None:
    return ScriptDirectory(str(SCRIPT_LOCATION)).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )


async def ensure_current(engine: AsyncEngine) -> None:
    """Refuse to run on a schema that is not at the head revision."""
    current, head = await current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutdated(
            f"database schema is at revision {current or 'none'}, the code needs {head}: "
            "run `retrorun migrate` first"
        )
