"""Read-model tables fed by projections (and the run track blobs written beside the events)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JsonDoc = JSON().with_variant(JSONB(), "postgresql")


class ChallengeRow(SQLModel, table=True):
    __tablename__ = "challenges"
    __table_args__ = (Index("ix_challenges_window", "ends_at", "starts_at"),)

    id: str = Field(sa_column=Column(String(100), primary_key=True))
    title: str = Field(sa_column=Column(String(80), nullable=False))
    kind: str = Field(sa_column=Column(String(20), nullable=False))
    target_value: float = Field(sa_column=Column(Float, nullable=False))
    distance_m: float | None = Field(default=None, sa_column=Column(Float))
    starts_at: float = Field(sa_column=Column(Float, nullable=False))  # Unix seconds
    ends_at: float = Field(sa_column=Column(Float, nullable=False))
    tz: str = Field(sa_column=Column(String(64), nullable=False))
    scope: str = Field(sa_column=Column(String(20), nullable=False))
    club_id: str | None = Field(default=None, sa_column=Column(String(100)))
    team_mode: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    template: str | None = Field(default=None, sa_column=Column(String(50)))
    created_by: str = Field(sa_column=Column(String(36), nullable=False))
    status: str = Field(default="open", sa_column=Column(String(20), nullable=False))
    closed_at: float | None = Field(default=None, sa_column=Column(Float))
    standings: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JsonDoc))
    members: int = Field(default=0, sa_column=Column(Integer, nullable=False))


class ChallengeMemberRow(SQLModel, table=True):
    __tablename__ = "challenge_members"
    __table_args__ = (Index("ix_challenge_members_runner", "runner_id"),)

    challenge_id: str = Field(sa_column=Column(String(100), primary_key=True))
    runner_id: str = Field(sa_column=Column(String(36), primary_key=True))
    joined_at: float = Field(sa_column=Column(Float, nullable=False))
    active: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))


class ChallengeProgressRow(SQLModel, table=True):
    __tablename__ = "challenge_progress"

    challenge_id: str = Field(sa_column=Column(String(100), primary_key=True))
    runner_id: str = Field(sa_column=Column(String(36), primary_key=True))
    value: float | None = Field(default=None, sa_column=Column(Float))
    runs: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    completed: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    reached_at: int = Field(sa_column=Column(BigInteger, nullable=False))


class RunRow(SQLModel, table=True):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_runner_ended", "runner_id", "ended_at"),
        Index("ix_runs_status_score", "status", "score"),
    )

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    runner_id: str = Field(sa_column=Column(String(36), nullable=False))
    activity: str = Field(sa_column=Column(String(20), nullable=False))
    status: str = Field(sa_column=Column(String(20), nullable=False))
    started_at: float = Field(sa_column=Column(Float, nullable=False))
    ended_at: float = Field(sa_column=Column(Float, nullable=False))
    distance_m: float = Field(sa_column=Column(Float, nullable=False))
    elapsed_s: float = Field(sa_column=Column(Float, nullable=False))
    moving_s: float = Field(sa_column=Column(Float, nullable=False))
    credited_distance_m: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    credited_elapsed_s: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    credited_ended_at: float | None = Field(default=None, sa_column=Column(Float))
    best_efforts_s: dict[str, float] = Field(sa_column=Column(JsonDoc, nullable=False))
    score: int = Field(sa_column=Column(Integer, nullable=False))
    flags: list[dict[str, Any]] = Field(sa_column=Column(JsonDoc, nullable=False))
    clean: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    fix_count: int = Field(sa_column=Column(Integer, nullable=False))
    appealed: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    recorded_position: int = Field(sa_column=Column(BigInteger, nullable=False))


class RunTrackRow(SQLModel, table=True):
    """The compact track of a run. Personal data: kept out of the event log so it can be erased."""

    __tablename__ = "run_tracks"
    __table_args__ = (Index("ix_run_tracks_recorded", "recorded_at"),)

    run_id: str = Field(sa_column=Column(String(36), primary_key=True))
    runner_id: str = Field(sa_column=Column(String(36), nullable=False))
    fix_count: int = Field(sa_column=Column(Integer, nullable=False))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    fingerprint: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    recorded_at: float = Field(sa_column=Column(Float, nullable=False))


class RaceRow(SQLModel, table=True):
    __tablename__ = "races"
    __table_args__ = (Index("ix_races_scheduled", "scheduled_at"),)

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    title: str = Field(sa_column=Column(String(80), nullable=False))
    distance_m: float = Field(sa_column=Column(Float, nullable=False))
    scheduled_at: float = Field(sa_column=Column(Float, nullable=False))
    capacity: int = Field(sa_column=Column(Integer, nullable=False))
    organiser_id: str = Field(sa_column=Column(String(36), nullable=False))
    club_id: str | None = Field(default=None, sa_column=Column(String(100)))
    open: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    status: str = Field(sa_column=Column(String(20), nullable=False))
    start_at: float | None = Field(default=None, sa_column=Column(Float))
    registered: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    results: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JsonDoc))


class RaceFixChunkRow(SQLModel, table=True):
    """A chunk of one runner's live fixes (an `encode_track` blob). Personal data: erasable."""

    __tablename__ = "race_fix_chunks"

    race_id: str = Field(sa_column=Column(String(36), primary_key=True))
    runner_id: str = Field(sa_column=Column(String(36), primary_key=True))
    chunk: int = Field(sa_column=Column(Integer, primary_key=True))
    first_seq: int = Field(sa_column=Column(Integer, nullable=False))
    last_seq: int = Field(sa_column=Column(Integer, nullable=False))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ClubRow(SQLModel, table=True):
    __tablename__ = "clubs"

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    name: str = Field(sa_column=Column(String(60), nullable=False))
    owner_id: str = Field(sa_column=Column(String(36), nullable=False))
    join_code: str = Field(sa_column=Column(String(32), nullable=False))
    members: int = Field(default=0, sa_column=Column(Integer, nullable=False))


class ClubMemberRow(SQLModel, table=True):
    __tablename__ = "club_members"
    __table_args__ = (Index("ix_club_members_runner", "runner_id"),)

    club_id: str = Field(sa_column=Column(String(36), primary_key=True))
    runner_id: str = Field(sa_column=Column(String(36), primary_key=True))
    role: str = Field(sa_column=Column(String(10), nullable=False))
    invited: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    #: While `invited`: who sent the invitation and when (Unix seconds; None for invitations
    #: logged before the event carried it). Cleared once the runner joins.
    invited_by: str | None = Field(default=None, sa_column=Column(String(36)))
    invited_at: float | None = Field(default=None, sa_column=Column(Float))


class BanRow(SQLModel, table=True):
    """Banned runners: their results stay in the log but leave every leaderboard."""

    __tablename__ = "bans"

    runner_id: str = Field(sa_column=Column(String(36), primary_key=True))
    reason: str = Field(sa_column=Column(Text, nullable=False))


class DrillRow(SQLModel, table=True):
    """A coordination drill session (drill_projection.py)."""

    __tablename__ = "drills"

    id: str = Field(sa_column=Column(String(36), primary_key=True))
    title: str = Field(sa_column=Column(String(80), nullable=False))
    coach_id: str = Field(sa_column=Column(String(36), nullable=False))
    club_id: str | None = Field(default=None, sa_column=Column(String(100)))
    status: str = Field(sa_column=Column(String(20), nullable=False))
    start_at: float | None = Field(default=None, sa_column=Column(Float))
    finished_at: float | None = Field(default=None, sa_column=Column(Float))
    sync_score: float | None = Field(default=None, sa_column=Column(Float))
    participants: int = Field(default=0, sa_column=Column(Integer, nullable=False))


class DrillResultRow(SQLModel, table=True):
    """One participant's scores in a finished drill (drill-count challenges, XP, badges)."""

    __tablename__ = "drill_results"
    __table_args__ = (Index("ix_drill_results_runner", "runner_id", "finished_at"),)

    drill_id: str = Field(sa_column=Column(String(36), primary_key=True))
    runner_id: str = Field(sa_column=Column(String(36), primary_key=True))
    finished_at: float = Field(sa_column=Column(Float, nullable=False))  # Unix seconds
    hits: int = Field(sa_column=Column(Integer, nullable=False))
    misses: int = Field(sa_column=Column(Integer, nullable=False))
    median_ms: float | None = Field(default=None, sa_column=Column(Float))
    best_ms: float | None = Field(default=None, sa_column=Column(Float))
    steadiness: float | None = Field(default=None, sa_column=Column(Float))
    sync_score: float = Field(sa_column=Column(Float, nullable=False))  # the group's
