"""Tables: the event log, its bookkeeping, and the account tables. Tables hold data, never rules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

#: 64-bit on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the 64-bit rowid itself.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that reads back aware UTC datetimes on SQLite too (SQLite
    stores no offset and hands back naive values; PostgreSQL already returns aware ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _utc() -> Column[datetime]:
    return Column(UtcDateTime(), nullable=False)


class StoredEvent(SQLModel, table=True):
    """One immutable event. `position` orders the whole log; `(stream_id, version)` a stream."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("stream_id", "version", name="uq_events_stream_version"),
        Index("ix_events_type_position", "type", "position"),
    )

    position: int | None = Field(
        default=None, sa_column=Column(BigId, primary_key=True, autoincrement=True)
    )
    stream_id: str = Field(sa_column=Column(String(200), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    type: str = Field(sa_column=Column(String(100), nullable=False))
    schema_version: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    data: dict[str, Any] = Field(sa_column=Column(JsonDoc, nullable=False))
    meta: dict[str, Any] = Field(sa_column=Column(JsonDoc, nullable=False))
    recorded_at: datetime = Field(sa_column=_utc())


class IdempotencyKey(SQLModel, table=True):
    """The first answer to a command sent with an idempotency key, so a retry returns it."""

    __tablename__ = "idempotency_keys"

    key: str = Field(sa_column=Column(String(200), primary_key=True))
    stream_id: str = Field(sa_column=Column(String(200), nullable=False))
    first_version: int = Field(sa_column=Column(Integer, nullable=False))
    last_version: int = Field(sa_column=Column(Integer, nullable=False))
    last_position: int = Field(sa_column=Column(BigInteger, nullable=False))
    recorded_at: datetime = Field(sa_column=_utc())


class ProjectionCheckpoint(SQLModel, table=True):
    """How far a projection has read the log."""

    __tablename__ = "projection_checkpoints"

    name: str = Field(sa_column=Column(String(100), primary_key=True))
    position: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(sa_column=_utc())


class StreamFence(SQLModel, table=True):
    """The highest fence token that appended to a stream written by one owner at a time (a
    live race room): an append stamped with a lower token comes from an owner whose lease lapsed
    and is refused (`server.store.event_store.StaleFence`)."""

    __tablename__ = "stream_fences"

    stream_id: str = Field(sa_column=Column(String(200), primary_key=True))
    token: int = Field(sa_column=Column(BigInteger, nullable=False))


class Runner(SQLModel, table=True):
    """An account. Personal data (the handle) lives here, not in event payloads."""

    __tablename__ = "runners"

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    handle: str = Field(sa_column=Column(String(32), nullable=False))
    handle_key: str = Field(sa_column=Column(String(32), nullable=False, unique=True))
    password_hash: str = Field(sa_column=Column(String(200), nullable=False))
    role: str = Field(default="runner", sa_column=Column(String(20), nullable=False))
    created_at: datetime = Field(sa_column=_utc())
    #: Bumped on logout-everywhere and bans: tokens carrying an older value are refused.
    token_generation: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    failed_logins: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    locked_until: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))
    banned: bool = Field(default=False)
    #: IANA time zone for day and week streaks.
    tz: str = Field(
        default="UTC", sa_column=Column(String(64), nullable=False, server_default="UTC")
    )


class RevokedToken(SQLModel, table=True):
    """A token id that was logged out before it expired."""

    __tablename__ = "revoked_tokens"

    jti: str = Field(sa_column=Column(String(64), primary_key=True))
    expires_at: datetime = Field(sa_column=_utc())


metadata = SQLModel.metadata


class StoredBoardEntry(SQLModel, table=True):
    """One runner's score on one leaderboard (the SQL backend of `server.boards`).

    `order_key` is the score mapped so that smaller is better (negated on higher-is-better
    boards), so one ascending index serves both directions: top-N walks it, and a rank counts the
    index entries ahead of the runner's. `runner_id` uses the "C" collation on PostgreSQL so ties
    break in byte order, like SQLite, Redis and `game.ranking`.
    """

    __tablename__ = "board_entries"
    __table_args__ = (
        Index("ix_board_entries_order", "board", "order_key", "reached_at", "runner_id"),
    )

    board: str = Field(sa_column=Column(String(200), primary_key=True))
    runner_id: str = Field(
        sa_column=Column(
            String(64).with_variant(String(64, collation="C"), "postgresql"), primary_key=True
        )
    )
    #: SQLModel maps float to FLOAT: double precision on PostgreSQL, 8-byte REAL on SQLite.
    score: float
    order_key: float
    reached_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class RunnerKey(SQLModel, table=True):
    """A runner's data key: personal text in the event log is encrypted with it, and deleting
    the account deletes the key, so that text can never be read again (crypto-shredding)."""

    __tablename__ = "runner_keys"

    runner_id: str = Field(sa_column=Column(String(36), primary_key=True))
    key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class SpotterPairing(SQLModel, table=True):
    """A runner's safety spotter (another account): `invited`, then `accepted` by the spotter.

    Account data like the runner row (not event-sourced): deleting either account deletes it."""

    __tablename__ = "spotter_pairings"
    __table_args__ = (Index("ix_spotter_pairings_spotter", "spotter_id"),)

    runner_id: str = Field(sa_column=Column(String(36), primary_key=True))
    spotter_id: str = Field(sa_column=Column(String(36), primary_key=True))
    status: str = Field(sa_column=Column(String(10), nullable=False))
    created_at: datetime = Field(sa_column=_utc())
    accepted_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))


class SpotterLink(SQLModel, table=True):
    """A share link that lets someone without an account follow a runner live.

    Only the SHA-256 of the link's random token is stored; revoking sets `revoked_at`."""

    __tablename__ = "spotter_links"
    __table_args__ = (Index("ix_spotter_links_runner", "runner_id"),)

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    runner_id: str = Field(sa_column=Column(String(36), nullable=False))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    label: str = Field(default="", sa_column=Column(String(60), nullable=False))
    created_at: datetime = Field(sa_column=_utc())
    expires_at: datetime = Field(sa_column=_utc())
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UtcDateTime()))


class PrivacySetting(SQLModel, table=True):
    """Who sees a runner's activities: `everyone` (signed-in runners), `club` (members of a
    shared club) or `nobody`. No row means the default, `everyone`. Tracks are never public:
    club-mates get a zone-masked view at most (`game.privacy`)."""

    __tablename__ = "privacy_settings"

    runner_id: str = Field(sa_column=Column(String(36), primary_key=True))
    activity_visibility: str = Field(sa_column=Column(String(10), nullable=False))
    updated_at: datetime = Field(sa_column=_utc())


class PrivacyZone(SQLModel, table=True):
    """A runner's privacy zone: fixes within `radius_m` of the centre are cut from shared
    views of their tracks. Account data: deleting the account deletes the zones."""

    __tablename__ = "privacy_zones"
    __table_args__ = (Index("ix_privacy_zones_runner", "runner_id"),)

    id: str = Field(sa_column=Column(String(32), primary_key=True))
    runner_id: str = Field(sa_column=Column(String(36), nullable=False))
    position: int = Field(sa_column=Column(Integer, nullable=False))
    lat: float
    lon: float
    radius_m: float
    label: str = Field(default="", sa_column=Column(String(60), nullable=False))
