"""Room frames: client frames as strict pydantic models, server frames encoded once with orjson.

`decode` turns one text frame into a model or a `FrameError` with a stable code; it never raises.
Outgoing frames are built as plain dicts and encoded once per broadcast (`encode`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

#: Largest text frame a client may send, in characters.
MAX_FRAME_CHARS = 16 * 1024
_T_MIN, _T_MAX = 946_684_800.0, 4_102_444_800.0  # 2000-01-01 .. 2100-01-01, Unix seconds
_SEQ_MAX = 2**31 - 1

Cid = Annotated[str | None, Field(default=None, max_length=64)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, frozen=True)

    cid: Cid = None


class AuthFrame(_Frame):
    """Exactly one of `token` (an account's bearer token) and `share_token` (a spotter share
    link's token, for someone without an account)."""

    type: Literal["auth"]
    token: str | None = Field(default=None, min_length=1, max_length=4096)
    share_token: str | None = Field(default=None, min_length=16, max_length=200)

    @model_validator(mode="after")
    def _exactly_one(self) -> AuthFrame:
        if (self.token is None) == (self.share_token is None):
            raise ValueError("exactly one of token and share_token")
        return self


class PingFrame(_Frame):
    type: Literal["ping"]
    t0: float = Field(ge=0, le=1e11)


class ReadyFrame(_Frame):
    type: Literal["ready"]


class RetireFrame(_Frame):
    """A runner stops racing: DNF (final)."""

    type: Literal["retire"]


class GpsFrame(_Frame):
    """One fix. `t` Unix seconds; `acc` metres (68%); angles degrees from north; `speed` m/s."""

    type: Literal["gps"]
    seq: int = Field(ge=1, le=_SEQ_MAX)
    t: float = Field(ge=_T_MIN, le=_T_MAX)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    acc: float | None = Field(default=None, gt=0, le=10_000)
    heading: float | None = Field(default=None, ge=0, le=360)
    speed: float | None = Field(default=None, ge=0, le=200)
    course: float | None = Field(default=None, ge=0, le=360)
    cadence: float | None = Field(default=None, ge=0, le=400)
    mock: bool = False
    #: Client-chosen number echoed back in the runner's own standings row (latency probes).
    echo: float | None = Field(default=None, ge=-1e15, le=1e15)


class ResumeFrame(_Frame):
    type: Literal["resume"]
    after_seq: int = Field(ge=0, le=2**53)
    epoch: str | None = Field(default=None, max_length=64)
    after_flag: int | None = Field(default=None, ge=0, le=2**53)


class _Control(_Frame):
    type: Literal["control"]


class ControlStart(_Control):
    action: Literal["start"]
    countdown_s: float = Field(default=10.0, ge=3, le=600)


class ControlPause(_Control):
    action: Literal["pause"]


class ControlResume(_Control):
    action: Literal["resume"]


class ControlAbort(_Control):
    action: Literal["abort"]
    reason: str = Field(min_length=1, max_length=500)


class ControlDisqualify(_Control):
    action: Literal["disqualify"]
    runner_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=500)


class ControlClose(_Control):
    action: Literal["close"]


ControlFrame = Annotated[
    ControlStart | ControlPause | ControlResume | ControlAbort | ControlDisqualify | ControlClose,
    Field(discriminator="action"),
]


class AckFrame(_Frame):
    """Drill rooms: the participant reacted to cue `cue` at `t` (their own clock, Unix seconds).

    `steadiness` (0..1, balance_hold cues only): the share of the hold the phone stayed still,
    1 - min(1, RMS of the gravity-removed acceleration in m/s^2 / 2.0), measured by the client.
    """

    type: Literal["ack"]
    cue: int = Field(ge=1, le=100_000)
    t: float = Field(ge=_T_MIN, le=_T_MAX)
    steadiness: float | None = Field(default=None, ge=0, le=1)


class SyncFrame(_Frame):
    """Drill rooms: one finished ping/pong exchange, reported so the room knows this
    connection's clock offset: `t0`/`t3` client clock (ping sent / pong received), `t1`/`t2`
    the pong's server times."""

    type: Literal["sync"]
    t0: float = Field(ge=0, le=1e11)
    t1: float = Field(ge=0, le=1e11)
    t2: float = Field(ge=0, le=1e11)
    t3: float = Field(ge=0, le=1e11)


class AlertAckFrame(_Frame):
    """Safety: a spotter or moderator acknowledges alert `id` (someone is on it)."""

    type: Literal["alert_ack"]
    id: str = Field(min_length=1, max_length=64)


class AlertCancelFrame(_Frame):
    """Safety: the runner cancels their alert `id` (a false alarm), within the cancel window."""

    type: Literal["alert_cancel"]
    id: str = Field(min_length=1, max_length=64)


ClientFrame = Annotated[
    AuthFrame
    | PingFrame
    | ReadyFrame
    | RetireFrame
    | GpsFrame
    | ResumeFrame
    | ControlFrame
    | AckFrame
    | SyncFrame
    | AlertAckFrame
    | AlertCancelFrame,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)
FRAME_TYPES = (
    "auth",
    "ping",
    "ready",
    "retire",
    "gps",
    "resume",
    "control",
    "ack",
    "sync",
    "alert_ack",
    "alert_cancel",
)


class FrameError(Exception):
    """A refused client frame: `code` is stable, `ref` is its `cid` or type when known."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


def decode(text: str) -> ClientFrame:
    """Parse one text frame, or raise `FrameError` (invalid_json / unknown_type / invalid_frame)."""
    try:
        return _ADAPTER.validate_json(text)
    except ValidationError as exc:
        raise _frame_error(text, exc) from None


def _frame_error(text: str, exc: ValidationError) -> FrameError:
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as err:
        return FrameError("invalid_json", f"not JSON: {err}")
    if not isinstance(raw, dict):
        return FrameError("invalid_json", "a frame is a JSON object")
    cid = raw.get("cid")
    kind = raw.get("type")
    ref = (
        cid
        if isinstance(cid, str) and len(cid) <= 64
        else (kind if isinstance(kind, str) else None)
    )
    first = exc.errors(include_url=False)[0]
    if first["type"] in ("union_tag_not_found", "union_tag_invalid") and first["loc"] in (
        (),
        ("control",),
    ):
        what = "action" if kind == "control" else "type"
        return FrameError("unknown_type", f"unknown or missing frame {what}", ref)
    where = ".".join(str(p) for p in first["loc"][1:]) or "frame"
    return FrameError("invalid_frame", f"{where}: {first['msg']}", ref)


def encode(frame: dict[str, Any]) -> str:
    """Encode a server frame once (orjson); the same text goes to every recipient."""
    return orjson.dumps(frame).decode()


def error(code: str, message: str, ref: str | None = None) -> str:
    return encode({"type": "error", "code": code, "message": message, "ref": ref})


# Drill rooms: server frames (built as dicts; the room adds `seq` and `epoch` to numbered ones)


class CueOut(TypedDict):
    """`cue`: fire at server time `at` (Unix seconds); scored cues take an `ack` until `ack_by`."""

    type: Literal["cue"]
    id: int
    at: float
    move: str
    prompt: str
    scored: bool
    phase: int  # index into the drill's phases
    ack_by: float | None


class PhaseOut(TypedDict):
    """`phase`: phase `index` (of `of`) runs from `starts_at` to `ends_at` (server time)."""

    type: Literal["phase"]
    index: int
    of: int
    move: str
    prompt: str
    duration_s: float
    starts_at: float
    ends_at: float


class DrillResultsOut(TypedDict):
    """`drill_results`: every participant's scores and the group sync score (0..1)."""

    type: Literal["drill_results"]
    drill_id: str
    at: float
    scored_cues: int
    scores: list[dict[str, Any]]
    sync_score: float


class ClockOut(TypedDict):
    """`clock`: the offset (server - client, s) the room now uses for this connection's acks."""

    type: Literal["clock"]
    offset: float
    rtt: float
    samples: int
    cid: NotRequired[str]


class DrillAckOut(TypedDict):
    """`ack` in a drill room: the reaction (or steadiness) to cue `cue` is stored."""

    type: Literal["ack"]
    cue: int
    reaction_ms: float | None
    steadiness: float | None
    cid: NotRequired[str]
