"""Server frames built from race state, events and standings (plain dicts, encoded by the room)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from game import races, safety
from game.course import CourseLine
from game.pace import Flag
from game.track import Fix
from server.rooms.protocol import GpsFrame
from server.tracks import stored_fix

LEADERS = 10

#: Pace verdict at the finish -> the status results and standings show.
FINISH_STATUS = {"verified": "finished", "review": "review", "rejected": "dq"}


def race_summary(state: races.RaceState, now: float) -> dict[str, Any]:
    return {
        "id": state.race_id,
        "title": state.title,
        "distance_m": state.distance_m,
        "status": races.status_at(state, now).value,
        "scheduled_at": state.scheduled_at,
        "start_at": state.start_at,
        "paused_s": state.paused_s,
        "capacity": state.capacity,
        "organiser_id": state.organiser_id,
        "registered": len(state.registered),
        "course": _course_summary(state),
        "cutoff_at": races.cutoff_at(state, now),
    }


def _course_summary(state: races.RaceState) -> dict[str, Any] | None:
    """The course's tolerance and length (the line itself: REST `GET /api/v1/races/{id}`)."""
    course = races.course_of(state)
    if course is None:
        return None
    length = CourseLine(course).length_m
    return {"tolerance_m": course.tolerance_m, "length_m": round(length, 1)}


def standing_row(s: races.Standing) -> dict[str, Any]:
    return {
        "rank": s.rank,
        "runner_id": s.runner_id,
        "distance_m": s.distance_m,
        "time_s": s.time_s,
        "status": s.status,
    }


def ranked_row(s: races.StandingRow, names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`standing_row` of a `RaceLive.ranking` tuple; with `names`, the runner's `handle` too
    (the leaders' rows: what a screen shows)."""
    rank, runner_id, distance_m, time_s, status = s
    row: dict[str, Any] = {
        "rank": rank,
        "runner_id": runner_id,
        "distance_m": distance_m,
        "time_s": time_s,
        "status": status,
    }
    if names is not None:
        row["handle"] = names.get(runner_id)
    return row


def event_frame(evt: Any, now: float) -> dict[str, Any] | None:
    """The broadcast for a race event (None: not broadcast)."""
    match evt:
        case races.CountdownStarted():
            return {
                "type": "countdown",
                "start_at": evt.start_at,
                "countdown_s": round(max(0.0, evt.start_at - now), 3),
            }
        case races.RacePaused():
            return {"type": "event", "event": "paused", "at": evt.at}
        case races.RaceResumed():
            return {"type": "event", "event": "resumed", "at": evt.at, "paused_s": evt.paused_s}
        case races.RaceAborted():
            return {"type": "event", "event": "aborted", "at": evt.at, "reason": evt.reason}
        case races.RunnerDisqualified():
            return {
                "type": "event",
                "event": "disqualified",
                "runner_id": evt.runner_id,
                "reason": evt.reason,
            }
        case races.RunnerFinished():
            return {
                "type": "event",
                "event": "runner_finished",
                "runner_id": evt.runner_id,
                "time_s": evt.time_s,
                "distance_m": evt.distance_m,
                "status": FINISH_STATUS.get(evt.status, "review"),
            }
        case races.RunnerRegistered():
            return {"type": "event", "event": "registered", "runner_id": evt.runner_id}
        case races.RunnerWithdrew():
            return {"type": "event", "event": "withdrew", "runner_id": evt.runner_id}
        case races.RaceEdited():
            return {"type": "event", "event": "edited", "changes": evt.changes}
        case races.RunnerRetired():
            return {"type": "event", "event": "retired", "runner_id": evt.runner_id, "at": evt.at}
        case races.RaceFinished():
            return {"type": "event", "event": "closed", "at": evt.at, "results": evt.results}
    return None


def flag_frame(flag_id: int, runner_id: str, flag: Flag, now: float) -> dict[str, Any]:
    return {
        "type": "event",
        "event": "flag",
        "id": flag_id,
        "runner_id": runner_id,
        "code": flag.code,
        "message": flag.message,
        "points": flag.points,
        "hard_fail": flag.hard_fail,
        "evidence": dict(flag.evidence),
        "at": round(now, 3),
    }


def alert_frame(alert: safety.Alert, position: dict[str, Any] | None) -> dict[str, Any]:
    """`alert`: sent to the runner, their spotters and the race's moderators (no `seq`)."""
    return {
        "type": "alert",
        "id": alert.alert_id,
        "runner_id": alert.runner_id,
        "kind": alert.kind,
        "at": alert.at,
        "cancel_until": alert.cancel_until,
        "escalated": alert.escalated,
        "status": alert.status.value,
        "evidence": dict(alert.evidence),
        "position": position,
    }


def safety_frame(
    evt: safety.SafetyEvent, alert: safety.Alert, position: dict[str, Any] | None
) -> dict[str, Any]:
    """The frame of a safety event (`alert` state after the event)."""
    match evt:
        case safety.AlertRaised():
            return alert_frame(alert, position)
        case safety.AlertCancelled():
            return {
                "type": "alert_cancelled",
                "id": evt.alert_id,
                "runner_id": evt.runner_id,
                "by": evt.by,
                "at": evt.at,
            }
        case safety.AlertAcknowledged():
            return {
                "type": "alert_acked",
                "id": evt.alert_id,
                "runner_id": evt.runner_id,
                "by": evt.by,
                "role": evt.role,
                "at": evt.at,
            }
        case safety.AlertEscalated():
            return {
                **alert_frame(alert, position),
                "type": "alert_escalated",
                "escalated_at": evt.at,
            }
    raise ValueError(f"not a safety event: {evt!r}")


def gps_fix(frame: GpsFrame) -> Fix:
    """The fix a `gps` frame carries, as the server stores and checks it (`stored_fix`: a
    replay of the stored chunks after a restart reaches the same results)."""
    return stored_fix(
        Fix(
            frame.t,
            frame.lat,
            frame.lon,
            acc_m=frame.acc,
            speed_mps=frame.speed,
            course_deg=frame.course,
            heading_deg=frame.heading,
            cadence_spm=frame.cadence,
            mock=frame.mock,
        )
    )
