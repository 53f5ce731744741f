"""Room frames: client frames as strict pydantic models, server frames encoded once with orjson.

`decode` turns one text frame into a model or a `FrameError` with a stable code; it never raises.
Outgoing frames are built as plain dicts and encoded once per broadcast (`encode`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

#: Largest text frame a client may send, in characters.
MAX_FRAME_CHARS = 16 * 1024
_T_MIN, _T_MAX = 946_684_800.0, 4_102_444_800.0  # 2000-01-01 .. 2100-01-01, Unix seconds
_SEQ_MAX = 2**31 - 1

Cid = Annotated[str | None, Field(default=None, max_length=64)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, frozen=True)

    cid: Cid = None


class AuthFrame(_Frame):
    type: Literal["auth"]
    token: str = Field(min_length=1, max_length=4096)


class PingFrame(_Frame):
    type: Literal["ping"]
    t0: float = Field(ge=0, le=1e11)


class ReadyFrame(_Frame):
    type: Literal["ready"]


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
ClientFrame = Annotated[
    AuthFrame | PingFrame | ReadyFrame | GpsFrame | ResumeFrame | ControlFrame,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)
FRAME_TYPES = ("auth", "ping", "ready", "gps", "resume", "control")


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
