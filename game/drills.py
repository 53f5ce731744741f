"""Coordination drills: templates, cue schedules, reaction scoring and the group sync score.

A drill is a timed sequence of phases. Every phase opens with a cue; reaction phases add
"switch!" cues at random moments. The server fixes every cue at an absolute server time before
the drill starts, so phones that synced their clocks fire each cue together. Participants ack a
cue with their own clock; the shell converts the ack to server time with that client's offset,
and the functions here score it.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from game.errors import InvalidCommand


class Move(StrEnum):
    BACKPEDAL = "backpedal"
    SHUFFLE_LEFT = "shuffle_left"
    SHUFFLE_RIGHT = "shuffle_right"
    BALANCE_HOLD = "balance_hold"  # one-leg hold; the phone may report steadiness
    SWITCH_REACTION = "switch_reaction"  # "switch!" cues at random moments
    MIRROR = "mirror"  # mirror a partner
    WALK_BACK = "walk_back"
    REST = "rest"
    COUNTDOWN = "countdown"  # a countdown finish: one cue a second


class Level(StrEnum):
    BEGINNER = "beginner"
    INTERMEDIATE = "intermediate"
    ADVANCED = "advanced"


#: Bounds a coach's own drill must respect.
MIN_PHASE_S, MAX_PHASE_S = 5.0, 300.0
MAX_PHASES = 12
MAX_TOTAL_S = 30 * 60.0
MAX_SWITCH_CUES = 20
MIN_CUE_GAP_S = 2.0
#: An ack later than this after its cue is a miss; earlier than the cue is refused.
ACK_WINDOW_S = 3.0
#: Reaction times below this are anticipation, not reaction (refused as absurd).
MIN_REACTION_MS = 80.0
#: Spread of reaction times (ms) at which the group sync score of a cue falls to 1/e.
SYNC_SCALE_MS = 150.0

SAFETY_BASE = (
    "Flat, clear ground; a soft surface such as grass or a track; look over your shoulder."
)
SAFETY_BEGINNER = SAFETY_BASE + " Beginners: have a spotter beside you."


@dataclass(frozen=True, slots=True)
class Phase:
    move: Move
    duration_s: float
    switch_cues: int = 0  # random "switch!" cues inside a switch_reaction phase
    prompt: str = ""


@dataclass(frozen=True, slots=True)
class Template:
    key: str
    title: str
    level: Level
    phases: tuple[Phase, ...]
    safety: str
    description: str = ""

    @property
    def duration_s(self) -> float:
        return sum(p.duration_s for p in self.phases)


def _t(key: str, title: str, level: Level, description: str, *phases: Phase) -> Template:
    safety = SAFETY_BEGINNER if level == Level.BEGINNER else SAFETY_BASE
    return Template(key, title, level, tuple(phases), safety, description)


P = Phase
LIBRARY: tuple[Template, ...] = (
    _t(
        "first-steps",
        "First Steps Back",
        Level.BEGINNER,
        "Gentle backpedal and walk-back intervals.",
        P(Move.WALK_BACK, 30),
        P(Move.BACKPEDAL, 20),
        P(Move.REST, 20),
        P(Move.BACKPEDAL, 20),
        P(Move.COUNTDOWN, 5),
    ),
    _t(
        "balance-basics",
        "Balance Basics",
        Level.BEGINNER,
        "One-leg holds between easy backpedals.",
        P(Move.BACKPEDAL, 20),
        P(Move.BALANCE_HOLD, 15, prompt="left leg"),
        P(Move.REST, 10),
        P(Move.BALANCE_HOLD, 15, prompt="right leg"),
        P(Move.COUNTDOWN, 5),
    ),
    _t(
        "shuffle-shuffle",
        "Side Shuffle Sampler",
        Level.BEGINNER,
        "Backward shuffles both ways.",
        P(Move.BACKPEDAL, 20),
        P(Move.SHUFFLE_LEFT, 15),
        P(Move.REST, 10),
        P(Move.SHUFFLE_RIGHT, 15),
        P(Move.COUNTDOWN, 5),
    ),
    _t(
        "switch-it",
        "Switch It Up",
        Level.INTERMEDIATE,
        "React to 'switch!' by changing direction.",
        P(Move.BACKPEDAL, 20),
        P(Move.SWITCH_REACTION, 45, switch_cues=5),
        P(Move.REST, 15),
        P(Move.SWITCH_REACTION, 45, switch_cues=5),
        P(Move.COUNTDOWN, 5),
    ),
    _t(
        "mirror-mirror",
        "Mirror Mirror",
        Level.INTERMEDIATE,
        "Pairs: mirror your partner's moves.",
        P(Move.BACKPEDAL, 20),
        P(Move.MIRROR, 40),
        P(Move.REST, 15),
        P(Move.MIRROR, 40),
        P(Move.COUNTDOWN, 5),
    ),
    _t(
        "steady-flamingo",
        "Steady Flamingo",
        Level.INTERMEDIATE,
        "Longer holds after effort.",
        P(Move.BACKPEDAL, 30),
        P(Move.BALANCE_HOLD, 30, prompt="left leg"),
        P(Move.BACKPEDAL, 30),
        P(Move.BALANCE_HOLD, 30, prompt="right leg"),
        P(Move.COUNTDOWN, 5),
    ),
    _t(
        "reflex-ladder",
        "Reflex Ladder",
        Level.ADVANCED,
        "Dense switch cues while backpedalling.",
        P(Move.BACKPEDAL, 20),
        P(Move.SWITCH_REACTION, 60, switch_cues=10),
        P(Move.SHUFFLE_LEFT, 20),
        P(Move.SHUFFLE_RIGHT, 20),
        P(Move.SWITCH_REACTION, 60, switch_cues=10),
        P(Move.COUNTDOWN, 5),
    ),
    _t(
        "full-retro",
        "Full Retro Circuit",
        Level.ADVANCED,
        "Every move, little rest.",
        P(Move.BACKPEDAL, 30),
        P(Move.SHUFFLE_LEFT, 20),
        P(Move.SHUFFLE_RIGHT, 20),
        P(Move.BALANCE_HOLD, 20, prompt="left leg"),
        P(Move.BALANCE_HOLD, 20, prompt="right leg"),
        P(Move.SWITCH_REACTION, 60, switch_cues=8),
        P(Move.MIRROR, 30),
        P(Move.COUNTDOWN, 5),
    ),
)
TEMPLATES: dict[str, Template] = {t.key: t for t in LIBRARY}


def compose(key: str, title: str, level: Level, phases: Sequence[Phase]) -> Template:
    """A coach's own drill, validated against the bounds above."""
    if not 3 <= len(title.strip()) <= 60:
        raise InvalidCommand("a drill title is 3 to 60 characters")
    if not 1 <= len(phases) <= MAX_PHASES:
        raise InvalidCommand(f"a drill has 1 to {MAX_PHASES} phases")
    for i, p in enumerate(phases):
        if not MIN_PHASE_S <= p.duration_s <= MAX_PHASE_S:
            raise InvalidCommand(
                f"phase {i + 1}: a phase lasts {MIN_PHASE_S:g} to {MAX_PHASE_S:g} s"
            )
        if p.switch_cues and p.move != Move.SWITCH_REACTION:
            raise InvalidCommand(f"phase {i + 1}: only switch_reaction phases have switch cues")
        if not 0 <= p.switch_cues <= MAX_SWITCH_CUES:
            raise InvalidCommand(f"phase {i + 1}: at most {MAX_SWITCH_CUES} switch cues")
        if p.switch_cues and p.switch_cues * MIN_CUE_GAP_S > p.duration_s - MIN_CUE_GAP_S:
            raise InvalidCommand(f"phase {i + 1}: too many switch cues for its duration")
        if len(p.prompt) > 60:
            raise InvalidCommand(f"phase {i + 1}: a prompt is at most 60 characters")
    total = sum(p.duration_s for p in phases)
    if total > MAX_TOTAL_S:
        raise InvalidCommand(f"a drill lasts at most {MAX_TOTAL_S / 60:g} minutes")
    safety = SAFETY_BEGINNER if level == Level.BEGINNER else SAFETY_BASE
    return Template(key, title.strip(), level, tuple(phases), safety)


@dataclass(frozen=True, slots=True)
class Cue:
    """One cue at an absolute server time `at` (Unix seconds). `scored` cues expect an ack."""

    id: int
    at: float
    move: Move
    prompt: str
    scored: bool


def schedule(template: Template, start_at: float, rng: random.Random) -> list[Cue]:
    """Every cue of a drill, at absolute times from `start_at`; switch cues at random moments."""
    cues: list[tuple[float, Move, str, bool]] = []
    t = start_at
    for phase in template.phases:
        label = phase.prompt or phase.move.value.replace("_", " ")
        cues.append((t, phase.move, label, phase.move == Move.SWITCH_REACTION))
        if phase.move == Move.COUNTDOWN:
            whole = int(phase.duration_s)
            cues += [(t + k, Move.COUNTDOWN, str(whole - k), False) for k in range(1, whole)]
        for at in _random_moments(rng, t, phase.duration_s, phase.switch_cues):
            cues.append((at, Move.SWITCH_REACTION, "switch!", True))
        t += phase.duration_s
    cues.sort(key=lambda c: c[0])
    return [
        Cue(i, round(at, 3), move, prompt, scored)
        for i, (at, move, prompt, scored) in enumerate(cues, start=1)
    ]


def _random_moments(rng: random.Random, start: float, duration_s: float, count: int) -> list[float]:
    """`count` moments inside the phase, MIN_CUE_GAP_S apart and away from its ends."""
    if count == 0:
        return []
    slack = duration_s - MIN_CUE_GAP_S * (count + 1)
    cuts = sorted(rng.uniform(0.0, slack) for _ in range(count))
    return [start + MIN_CUE_GAP_S * (k + 1) + cut for k, cut in enumerate(cuts)]


class AckProblem(StrEnum):
    EARLY = "ack_early"  # before the cue fired
    LATE = "ack_late"  # after the ack window: counted as a miss
    DUPLICATE = "ack_duplicate"
    ABSURD = "ack_absurd"  # faster than a human reacts
    UNKNOWN_CUE = "unknown_cue"
    NOT_SCORED = "cue_not_scored"


def judge_ack(
    cue: Cue | None, ack_at: float, already: bool
) -> tuple[float | None, AckProblem | None]:
    """Reaction time in ms for an ack at server time `ack_at`, or why it is refused."""
    if cue is None:
        return None, AckProblem.UNKNOWN_CUE
    if not cue.scored:
        return None, AckProblem.NOT_SCORED
    if already:
        return None, AckProblem.DUPLICATE
    reaction_ms = (ack_at - cue.at) * 1000.0
    if reaction_ms < 0:
        return None, AckProblem.EARLY
    if reaction_ms < MIN_REACTION_MS:
        return None, AckProblem.ABSURD
    if reaction_ms > ACK_WINDOW_S * 1000.0:
        return None, AckProblem.LATE
    return round(reaction_ms, 1), None


@dataclass(frozen=True, slots=True)
class ParticipantScore:
    participant_id: str
    hits: int
    misses: int
    median_ms: float | None
    best_ms: float | None
    steadiness: float | None  # mean client-reported steadiness during balance holds (0..1)


def score_participant(
    participant_id: str,
    scored_cues: int,
    reactions_ms: Mapping[int, float],
    steadiness: Iterable[float] = (),
) -> ParticipantScore:
    """Hits, misses, median and best reaction of one participant."""
    times = sorted(reactions_ms.values())
    held = [s for s in steadiness if 0.0 <= s <= 1.0]
    return ParticipantScore(
        participant_id=participant_id,
        hits=len(times),
        misses=max(0, scored_cues - len(times)),
        median_ms=round(statistics.median(times), 1) if times else None,
        best_ms=times[0] if times else None,
        steadiness=round(statistics.fmean(held), 3) if held else None,
    )


def group_sync_score(reactions_by_cue: Mapping[int, Sequence[float]], participants: int) -> float:
    """How tightly the group moved together, 0..1.

    Per scored cue: exp(-spread / SYNC_SCALE_MS), where spread is the standard deviation of the
    reaction times of those who acked, weighted by the share of participants who acked at all.
    The score is the mean over cues; a group that reacts as one scores near 1.
    """
    if participants <= 0 or not reactions_by_cue:
        return 0.0
    per_cue = []
    for times in reactions_by_cue.values():
        if not times:
            per_cue.append(0.0)
            continue
        spread = statistics.pstdev(times) if len(times) > 1 else 0.0
        share = min(1.0, len(times) / participants)
        per_cue.append(math.exp(-spread / SYNC_SCALE_MS) * share)
    return round(statistics.fmean(per_cue), 4)
