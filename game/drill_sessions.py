"""The Drill decider: a coach schedules a drill, starts it (every cue fixed in time), acks are
recorded in batches, and the finish publishes each participant's scores and the group sync score."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from game import drills
from game.errors import Conflict, InvalidCommand
from game.events import event


class DrillStatus(StrEnum):
    NONE = "none"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    FINISHED = "finished"


MIN_LEAD_S, MAX_LEAD_S = 3.0, 300.0


@dataclass(frozen=True, slots=True)
class ScheduleDrill:
    drill_id: str
    template: drills.Template
    coach_id: str
    club_id: str | None = None


@dataclass(frozen=True, slots=True)
class StartDrill:
    by: str
    lead_s: float
    seed: int  # the shell draws it; the cue moments follow from it


@dataclass(frozen=True, slots=True)
class RecordAcks:
    participant_id: str
    reactions_ms: dict[int, float]  # cue id -> reaction, already judged by `drills.judge_ack`
    steadiness: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FinishDrill:
    by: str


@event("DrillScheduled")
@dataclass(frozen=True, slots=True)
class DrillScheduled:
    drill_id: str
    title: str
    level: str
    phases: list[dict[str, Any]]
    safety: str
    coach_id: str
    club_id: str | None


@event("DrillStarted")
@dataclass(frozen=True, slots=True)
class DrillStarted:
    drill_id: str
    start_at: float
    cues: list[dict[str, Any]]
    by: str


@event("DrillAcksRecorded")
@dataclass(frozen=True, slots=True)
class DrillAcksRecorded:
    drill_id: str
    participant_id: str
    reactions_ms: dict[str, float]  # JSON keys are strings
    steadiness: list[float]


@event("DrillFinished")
@dataclass(frozen=True, slots=True)
class DrillFinished:
    drill_id: str
    at: float
    scores: list[dict[str, Any]]
    sync_score: float


DrillEvent = DrillScheduled | DrillStarted | DrillAcksRecorded | DrillFinished


@dataclass(frozen=True, slots=True)
class DrillState:
    status: DrillStatus = DrillStatus.NONE
    drill_id: str = ""
    title: str = ""
    coach_id: str = ""
    club_id: str | None = None
    phases: tuple[drills.Phase, ...] = ()
    start_at: float | None = None
    cues: tuple[drills.Cue, ...] = ()
    reactions: dict[str, dict[int, float]] = field(default_factory=dict)
    steadiness: dict[str, tuple[float, ...]] = field(default_factory=dict)
    scores: tuple[dict[str, Any], ...] = ()
    sync_score: float | None = None

    @property
    def end_at(self) -> float | None:
        if self.start_at is None:
            return None
        return self.start_at + sum(p.duration_s for p in self.phases)


def initial_state() -> DrillState:
    return DrillState()


def decide(
    state: DrillState, command: ScheduleDrill | StartDrill | RecordAcks | FinishDrill, now: datetime
) -> list[DrillEvent]:
    """Decide a drill command."""
    t = now.timestamp()
    if isinstance(command, ScheduleDrill):
        if state.status != DrillStatus.NONE:
            raise Conflict("this drill exists", code="drill_exists")
        tpl = command.template
        return [
            DrillScheduled(
                command.drill_id,
                tpl.title,
                tpl.level.value,
                [
                    {
                        "move": p.move.value,
                        "duration_s": p.duration_s,
                        "switch_cues": p.switch_cues,
                        "prompt": p.prompt,
                    }
                    for p in tpl.phases
                ],
                tpl.safety,
                command.coach_id,
                command.club_id,
            )
        ]
    if state.status == DrillStatus.NONE:
        raise InvalidCommand("no such drill", code="not_found")
    if isinstance(command, StartDrill):
        if state.status != DrillStatus.SCHEDULED:
            raise Conflict("the drill already started", code="bad_drill_state")
        if not MIN_LEAD_S <= command.lead_s <= MAX_LEAD_S:
            raise InvalidCommand(f"the lead is {MIN_LEAD_S:g} to {MAX_LEAD_S:g} s")
        tpl = drills.Template(state.drill_id, state.title, drills.Level.BEGINNER, state.phases, "")
        cues = drills.schedule(tpl, round(t + command.lead_s, 3), random.Random(command.seed))
        return [
            DrillStarted(
                state.drill_id,
                round(t + command.lead_s, 3),
                [
                    {
                        "id": c.id,
                        "at": c.at,
                        "move": c.move.value,
                        "prompt": c.prompt,
                        "scored": c.scored,
                    }
                    for c in cues
                ],
                command.by,
            )
        ]
    if isinstance(command, RecordAcks):
        if state.status != DrillStatus.RUNNING:
            raise Conflict("the drill is not running", code="bad_drill_state")
        known = {c.id for c in state.cues if c.scored}
        had = state.reactions.get(command.participant_id, {})
        fresh = {k: v for k, v in command.reactions_ms.items() if k in known and k not in had}
        if not fresh and not command.steadiness:
            return []
        return [
            DrillAcksRecorded(
                state.drill_id,
                command.participant_id,
                {str(k): v for k, v in sorted(fresh.items())},
                [s for s in command.steadiness if 0.0 <= s <= 1.0],
            )
        ]
    if state.status != DrillStatus.RUNNING:
        raise Conflict("the drill is not running", code="bad_drill_state")
    return [DrillFinished(state.drill_id, t, *results(state))]


def results(state: DrillState) -> tuple[list[dict[str, Any]], float]:
    """Each participant's scores and the group sync score."""
    scored = [c for c in state.cues if c.scored]
    participants = sorted(set(state.reactions) | set(state.steadiness))
    scores = []
    for pid in participants:
        s = drills.score_participant(
            pid, len(scored), state.reactions.get(pid, {}), state.steadiness.get(pid, ())
        )
        scores.append(
            {
                "participant_id": pid,
                "hits": s.hits,
                "misses": s.misses,
                "median_ms": s.median_ms,
                "best_ms": s.best_ms,
                "steadiness": s.steadiness,
            }
        )
    by_cue = {c.id: [r[c.id] for r in state.reactions.values() if c.id in r] for c in scored}
    return scores, drills.group_sync_score(by_cue, len(participants))


def evolve(state: DrillState, evt: DrillEvent) -> DrillState:
    """Apply one event to a drill's state."""
    match evt:
        case DrillScheduled():
            phases = tuple(
                drills.Phase(drills.Move(p["move"]), p["duration_s"], p["switch_cues"], p["prompt"])
                for p in evt.phases
            )
            return DrillState(
                DrillStatus.SCHEDULED, evt.drill_id, evt.title, evt.coach_id, evt.club_id, phases
            )
        case DrillStarted():
            cues = tuple(
                drills.Cue(c["id"], c["at"], drills.Move(c["move"]), c["prompt"], c["scored"])
                for c in evt.cues
            )
            return replace(state, status=DrillStatus.RUNNING, start_at=evt.start_at, cues=cues)
        case DrillAcksRecorded():
            mine = dict(state.reactions.get(evt.participant_id, {}))
            mine.update({int(k): v for k, v in evt.reactions_ms.items()})
            held = (*state.steadiness.get(evt.participant_id, ()), *evt.steadiness)
            return replace(
                state,
                reactions={**state.reactions, evt.participant_id: mine},
                steadiness={**state.steadiness, evt.participant_id: held},
            )
        case DrillFinished():
            return replace(
                state,
                status=DrillStatus.FINISHED,
                scores=tuple(evt.scores),
                sync_score=evt.sync_score,
            )
    return state
