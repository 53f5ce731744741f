"""Runner safety during a live race: the sudden-stop (fall) detector and the alert decider.

Pure: time comes in as arguments (fix times, and `now` for timer checks); nothing here reads a
clock or does I/O.

**Fall-like stop** (`FallDetector`, thresholds in `SafetyPolicy`). Each fix carries a speed: the
device's own (Doppler) speed when it sends one, else the displacement over the last
`speed_window_s` divided by the time (noisier: GPS jitter reads as slow movement, so without a
device speed a stop is seen later or not at all). A fix whose speed is below `stopped_mps`, when a
fix within the previous `decel_window_s` seconds was at `moving_mps` or faster, is a *sudden
stop* (a walk slowing down over many seconds is not). The stop becomes a `fall` signal once the
runner stays stopped for `stopped_s`: every later fix within `stop_radius_m` (plus its accuracy)
of the stop point and, when the device reports speed, below `resume_mps`. A fix that moves on
drops the suspicion. `tick(now)` raises it too when the phone falls silent after a sudden stop.
One signal per stop: the detector re-arms once the runner runs again (`moving_mps`).

**No progress** is the live pace check's signal (`LiveCheck.tick`, `no_progress` after
`PacePolicy.no_progress_s`); the room configures it from `SafetyPolicy.no_progress_s`.

**Alerts** are a decider on a `safety-<race id>` stream. `AlertRaised` opens an alert for the
runner's spotters and the race's moderators; it ends as `AlertCancelled` (by the runner, within
`cancel_window_s` of being raised: a false alarm) or `AlertAcknowledged` (by a spotter or a
moderator: someone is on it). An alert nobody acknowledged within `escalate_after_s` gets one
`AlertEscalated` (the room sends it again, to everyone who may help). Events name the runner by
id and carry speeds and durations as evidence, never positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeAlias

from game.errors import Conflict, Forbidden, InvalidCommand, NotFound
from game.events import event
from game.track import EARTH_RADIUS_M, Fix

_RAD = math.pi / 180.0
_M_PER_DEG = EARTH_RADIUS_M * _RAD


@dataclass(frozen=True, slots=True)
class SafetyPolicy:
    """Thresholds of the safety signals and the alert lifecycle (seconds, metres, m/s)."""

    #: Running speed: a sudden stop must come from at least this speed.
    moving_mps: float = 1.5
    #: Stopped: below this speed.
    stopped_mps: float = 0.3
    #: The drop from `moving_mps` to `stopped_mps` happens within this many seconds.
    decel_window_s: float = 2.0
    #: ... and the runner stays stopped at least this long before the alert.
    stopped_s: float = 5.0
    #: Movement tolerated while stopped, on top of the fix's reported accuracy.
    stop_radius_m: float = 5.0
    #: A device speed at or above this while stopped means the runner moved on.
    resume_mps: float = 0.8
    #: Window of the position-derived speed when the device reports none.
    speed_window_s: float = 2.0
    #: No credited distance for this long during a race: a `no_progress` alert.
    no_progress_s: float = 60.0
    #: The runner may cancel an alert (false alarm) this long after it was raised.
    cancel_window_s: float = 15.0
    #: An alert nobody acknowledged is escalated after this long.
    escalate_after_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.stopped_mps < self.moving_mps:
            raise ValueError("0 < stopped_mps < moving_mps")
        for name in ("decel_window_s", "stopped_s", "speed_window_s", "no_progress_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.cancel_window_s < 0 or self.escalate_after_s <= 0 or self.stop_radius_m < 0:
            raise ValueError("cancel_window_s >= 0, escalate_after_s > 0, stop_radius_m >= 0")


# detection


@dataclass(frozen=True, slots=True)
class StopSignal:
    """A fall-like stop: `at` is the time of the stop (the first stopped fix)."""

    kind: str
    at: float
    evidence: dict[str, float]


@dataclass(slots=True)
class _Stop:
    t: float
    lat: float
    lon: float
    from_mps: float
    drop_s: float


def _flat_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    kx = _M_PER_DEG * math.cos(0.5 * (lat1 + lat2) * _RAD)
    dlon = lon2 - lon1
    if dlon > 180.0:
        dlon -= 360.0
    elif dlon < -180.0:
        dlon += 360.0
    return math.hypot(dlon * kx, (lat2 - lat1) * _M_PER_DEG)


class FallDetector:
    """One runner's sudden-stop detector, fed fixes in time order (see the module docstring)."""

    __slots__ = ("_armed", "_last_t", "_policy", "_recent", "_stop")

    def __init__(self, policy: SafetyPolicy | None = None) -> None:
        self._policy = policy or SafetyPolicy()
        # (t, lat, lon, speed) of the fixes within the last few seconds
        self._recent: list[tuple[float, float, float, float]] = []  # a few seconds of fixes
        self._stop: _Stop | None = None
        self._armed = True
        self._last_t = -math.inf

    @property
    def suspected_since(self) -> float | None:
        """Time of a sudden stop not yet confirmed (None: nothing suspected)."""
        return self._stop.t if self._stop is not None else None

    def _speed(self, fix: Fix) -> float:
        if fix.speed_mps is not None and math.isfinite(fix.speed_mps):
            return max(0.0, fix.speed_mps)
        recent = self._recent
        if not recent:
            return 0.0
        horizon = fix.t - self._policy.speed_window_s
        base = next((r for r in recent if r[0] >= horizon), recent[-1])
        if base[0] >= fix.t:
            return 0.0
        return _flat_m(base[1], base[2], fix.lat, fix.lon) / (fix.t - base[0])

    def add(self, fix: Fix) -> list[StopSignal]:
        """Take the runner's next fix; returns a `fall` signal when a sudden stop is confirmed."""
        p = self._policy
        t = fix.t
        if not math.isfinite(t) or t <= self._last_t:
            return []  # duplicate or out of order: ignored
        self._last_t = t
        v = self._speed(fix)
        out: list[StopSignal] = []
        stop = self._stop
        if stop is not None:
            acc = fix.acc_m if fix.acc_m is not None and math.isfinite(fix.acc_m) else 0.0
            moved = _flat_m(stop.lat, stop.lon, fix.lat, fix.lon)
            device_moving = fix.speed_mps is not None and v >= p.resume_mps
            if moved > p.stop_radius_m + acc or device_moving:
                self._stop = None  # stumbled and went on
            elif t - stop.t >= p.stopped_s:
                out = self._confirm(t)
        elif self._armed and v < p.stopped_mps:
            before = [r for r in self._recent if r[0] >= t - p.decel_window_s]
            fast = [r for r in before if r[3] >= p.moving_mps]
            if fast:
                last_fast = fast[-1]
                self._stop = _Stop(t, fix.lat, fix.lon, last_fast[3], t - last_fast[0])
        if v >= p.moving_mps:
            self._armed = True
        recent = self._recent
        recent.append((t, fix.lat, fix.lon, v))
        keep = t - max(p.decel_window_s, p.speed_window_s) - 1.0
        while len(recent) > 2 and recent[0][0] < keep:
            del recent[0]
        return out

    def tick(self, now: float) -> list[StopSignal]:
        """Timer check without a new fix: a sudden stop followed by silence is confirmed too."""
        stop = self._stop
        if stop is not None and now - stop.t >= self._policy.stopped_s:
            return self._confirm(now)
        return []

    def _confirm(self, t: float) -> list[StopSignal]:
        stop = self._stop
        assert stop is not None
        self._stop = None
        self._armed = False  # one signal per stop; re-armed when running again
        evidence = {
            "from_mps": round(stop.from_mps, 2),
            "drop_s": round(stop.drop_s, 2),
            "stopped_s": round(t - stop.t, 1),
        }
        return [StopSignal("fall", stop.t, evidence)]


# the alert decider


class AlertKind(StrEnum):
    FALL = "fall"
    NO_PROGRESS = "no_progress"


class AlertStatus(StrEnum):
    OPEN = "open"
    CANCELLED = "cancelled"
    ACKNOWLEDGED = "acknowledged"


# commands


@dataclass(frozen=True, slots=True)
class RaiseAlert:
    alert_id: str
    runner_id: str
    kind: str
    evidence: dict[str, Any] = field(default_factory=dict)
    cancel_window_s: float = 15.0


@dataclass(frozen=True, slots=True)
class CancelAlert:
    """The runner: a false alarm."""

    alert_id: str
    by: str


@dataclass(frozen=True, slots=True)
class AcknowledgeAlert:
    """A spotter or moderator: someone is on it. `role` is `spotter` or `moderator`."""

    alert_id: str
    by: str
    role: str


@dataclass(frozen=True, slots=True)
class EscalateAlert:
    alert_id: str


Command: TypeAlias = RaiseAlert | CancelAlert | AcknowledgeAlert | EscalateAlert


# events


@event("AlertRaised")
@dataclass(frozen=True, slots=True)
class AlertRaised:
    scope: str  # what the alert belongs to: `race:<id>`
    alert_id: str
    runner_id: str
    kind: str
    at: float
    cancel_until: float
    evidence: dict[str, Any]


@event("AlertCancelled")
@dataclass(frozen=True, slots=True)
class AlertCancelled:
    scope: str
    alert_id: str
    runner_id: str
    by: str
    at: float


@event("AlertAcknowledged")
@dataclass(frozen=True, slots=True)
class AlertAcknowledged:
    scope: str
    alert_id: str
    runner_id: str
    by: str
    role: str
    at: float


@event("AlertEscalated")
@dataclass(frozen=True, slots=True)
class AlertEscalated:
    scope: str
    alert_id: str
    runner_id: str
    at: float


SafetyEvent: TypeAlias = AlertRaised | AlertCancelled | AlertAcknowledged | AlertEscalated


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    runner_id: str
    kind: str
    at: float
    cancel_until: float
    evidence: dict[str, Any]
    status: AlertStatus = AlertStatus.OPEN
    escalated: bool = False
    closed_by: str | None = None
    closed_at: float | None = None


@dataclass(frozen=True, slots=True)
class SafetyState:
    scope: str = ""
    alerts: dict[str, Alert] = field(default_factory=dict)

    def open_alerts(self, runner_id: str | None = None) -> list[Alert]:
        """Open alerts (of one runner), oldest first."""
        return [
            a
            for a in self.alerts.values()
            if a.status == AlertStatus.OPEN and (runner_id is None or a.runner_id == runner_id)
        ]


def initial_state(scope: str = "") -> SafetyState:
    return SafetyState(scope)


_ROLES = ("spotter", "moderator")
MAX_ID = 64


def decide(state: SafetyState, command: Command, now: datetime) -> list[SafetyEvent]:
    """Decide a safety command (`now`: the time it is decided)."""
    t = now.timestamp()
    scope = state.scope
    match command:
        case RaiseAlert(alert_id, runner_id, kind, evidence, cancel_window_s):
            if kind not in AlertKind.__members__.values():
                raise InvalidCommand(f"unknown alert kind {kind!r}")
            if not alert_id or len(alert_id) > MAX_ID or alert_id in state.alerts:
                raise Conflict("that alert id is taken", code="alert_exists")
            if cancel_window_s < 0:
                raise InvalidCommand("the cancel window cannot be negative")
            if any(a.kind == kind for a in state.open_alerts(runner_id)):
                return []  # one open alert per runner and kind
            return [
                AlertRaised(
                    scope, alert_id, runner_id, kind, t, round(t + cancel_window_s, 3), evidence
                )
            ]
        case CancelAlert(alert_id, by):
            alert = _alert(state, alert_id)
            if by != alert.runner_id:
                raise Forbidden("only the runner cancels their alert", code="forbidden")
            _open(alert)
            if t > alert.cancel_until:
                raise Conflict(
                    "too late to cancel: a spotter or moderator must acknowledge it",
                    code="cancel_window_over",
                )
            return [AlertCancelled(scope, alert_id, alert.runner_id, by, t)]
        case AcknowledgeAlert(alert_id, by, role):
            alert = _alert(state, alert_id)
            if role not in _ROLES:
                raise InvalidCommand(f"role is one of {', '.join(_ROLES)}")
            if by == alert.runner_id:
                raise Forbidden("the runner cancels (alert_cancel), others acknowledge")
            _open(alert)
            return [AlertAcknowledged(scope, alert_id, alert.runner_id, by, role, t)]
        case EscalateAlert(alert_id):
            alert = _alert(state, alert_id)
            if alert.status != AlertStatus.OPEN or alert.escalated:
                return []
            return [AlertEscalated(scope, alert_id, alert.runner_id, t)]
    raise InvalidCommand("unknown safety command")


def _alert(state: SafetyState, alert_id: str) -> Alert:
    alert = state.alerts.get(alert_id)
    if alert is None:
        raise NotFound(f"no alert {alert_id[:MAX_ID]!r}", code="unknown_alert")
    return alert


def _open(alert: Alert) -> None:
    if alert.status != AlertStatus.OPEN:
        raise Conflict(f"the alert was already {alert.status.value}", code="alert_closed")


def due_escalations(state: SafetyState, now: float, policy: SafetyPolicy) -> list[EscalateAlert]:
    """Escalations due at `now`: open alerts nobody acknowledged within `escalate_after_s`."""
    return [
        EscalateAlert(a.alert_id)
        for a in state.alerts.values()
        if a.status == AlertStatus.OPEN
        and not a.escalated
        and now - a.at >= policy.escalate_after_s
    ]


def evolve(state: SafetyState, evt: SafetyEvent) -> SafetyState:
    match evt:
        case AlertRaised():
            alert = Alert(
                evt.alert_id, evt.runner_id, evt.kind, evt.at, evt.cancel_until, evt.evidence
            )
            return replace(state, scope=evt.scope, alerts={**state.alerts, evt.alert_id: alert})
        case AlertCancelled():
            return _close(state, evt.alert_id, AlertStatus.CANCELLED, evt.by, evt.at)
        case AlertAcknowledged():
            return _close(state, evt.alert_id, AlertStatus.ACKNOWLEDGED, evt.by, evt.at)
        case AlertEscalated():
            found = state.alerts.get(evt.alert_id)
            if found is None:
                return state
            return replace(
                state, alerts={**state.alerts, evt.alert_id: replace(found, escalated=True)}
            )
    return state


def _close(
    state: SafetyState, alert_id: str, status: AlertStatus, by: str, at: float
) -> SafetyState:
    alert = state.alerts.get(alert_id)
    if alert is None:
        return state
    closed = replace(alert, status=status, closed_by=by, closed_at=at)
    return replace(state, alerts={**state.alerts, alert_id: closed})
