"""REST shapes: the fields of the API's answers the SDK relies on (the server may add more)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

JSON = dict[str, Any]


class RunnerPublic(TypedDict):
    id: str
    handle: str
    role: str
    created_at: str


class Flag(TypedDict):
    code: str
    message: str
    points: int
    hard_fail: bool
    evidence: dict[str, Any]


class RunPublic(TypedDict):
    id: str
    runner_id: str
    activity: str
    status: Literal["verified", "review", "rejected"]
    distance_m: float
    duration_s: float
    moving_s: float
    credited_distance_m: float
    started_at: str | None
    ended_at: str | None
    score: int
    flags: list[Flag]
    best_efforts_s: dict[str, float]
    fix_count: int
    appealed: bool


class Challenge(TypedDict):
    id: str
    title: str
    kind: str
    target_value: float
    distance_m: float | None
    starts_at: str
    ends_at: str
    status: str
    members: int


class Progress(TypedDict):
    challenge_id: str
    runner_id: str
    joined: bool
    value: float | None
    target_value: float
    percent: float
    runs: int
    completed: bool
    rank: int | None
    of: int


class BoardEntry(TypedDict):
    rank: int
    runner_id: str
    handle: str | None
    score: float


class BoardPage(TypedDict):
    board: str
    total: int
    limit: int
    offset: int
    entries: list[BoardEntry]


class ResultRow(TypedDict):
    place: int | None
    runner_id: str
    time_s: float | None
    distance_m: float
    status: str


class DrillPhase(TypedDict):
    move: str
    duration_s: float
    switch_cues: int
    prompt: str


class DrillPublic(TypedDict):
    """`GET /api/v1/drills/{id}`: the drill, its cues (server times) and, once over, scores."""

    id: str
    title: str
    coach_id: str
    club_id: str | None
    status: str
    phases: list[DrillPhase]
    start_at: float | None
    cues: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    sync_score: float | None
    room: str


class Pairing(TypedDict):
    runner_id: str
    spotter_id: str
    status: str
    created_at: str
    accepted_at: str | None


class Pairings(TypedDict):
    spotters: list[Pairing]
    spotting: list[Pairing]


class ShareLink(TypedDict):
    id: str
    label: str
    created_at: str
    expires_at: str
    revoked_at: str | None
    active: bool
    token: str  # only in the answer to `create_share_link`
    watch_url: str  # idem


class WatchRace(TypedDict):
    id: str
    title: str
    status: str
    scheduled_at: float
    start_at: float | None
    room: str


class Watch(TypedDict):
    """`GET /api/v1/spotters/watch/{token}`: what a share link follows."""

    runner_id: str
    handle: str | None
    expires_at: str
    races: list[WatchRace]
