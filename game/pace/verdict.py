"""Flags and verdicts: what the pace check says about a track, JSON-ready."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from game.pace.policy import PacePolicy

Evidence = dict[str, float | int | str]


def evidence(**values: object) -> Evidence:
    """Evidence values as plain JSON numbers (floats rounded to mm / ms; non-finite as text)."""
    out: Evidence = {}
    for key, value in values.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, int):
            out[key] = value
        else:
            f = float(value)  # type: ignore[arg-type]
            if f.is_integer() and abs(f) < 2**53 and key in _INT_KEYS:
                out[key] = int(f)
            elif math.isfinite(f):
                out[key] = round(f, 3)
            else:
                out[key] = str(f)
    return out


_INT_KEYS = frozenset({"index", "count", "fixes"})


@dataclass(frozen=True, slots=True)
class Flag:
    """One reason for suspicion: stable `code`, human `message`, points and evidence."""

    code: str
    message: str
    points: int
    hard_fail: bool
    evidence: Evidence = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "code": self.code,
            "message": self.message,
            "points": self.points,
            "hard_fail": self.hard_fail,
            "evidence": dict(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """The pace check's decision on one track."""

    status: str  # "verified" | "review" | "rejected"
    score: int
    distance_m: float
    elapsed_s: float
    moving_s: float
    flags: tuple[Flag, ...]
    low_confidence: bool
    record_eligible: bool
    fixes_used: int

    @property
    def codes(self) -> tuple[str, ...]:
        """Flag codes in order."""
        return tuple(f.code for f in self.flags)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "status": self.status,
            "score": self.score,
            "distance_m": round(self.distance_m, 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "moving_s": round(self.moving_s, 3),
            "flags": [f.to_dict() for f in self.flags],
            "low_confidence": self.low_confidence,
            "record_eligible": self.record_eligible,
            "fixes_used": self.fixes_used,
        }


def decide(
    flags: list[Flag],
    policy: PacePolicy,
    *,
    distance_m: float = 0.0,
    elapsed_s: float = 0.0,
    moving_s: float = 0.0,
    low_confidence: bool = False,
    record_blocked: bool = False,
    fixes_used: int = 0,
) -> Verdict:
    """Sum the points and pick the status: any hard fail rejects, else by score."""
    score = sum(f.points for f in flags)
    hard = any(f.hard_fail for f in flags)
    if hard:
        score = max(score, policy.reject_score)
    if hard or score >= policy.reject_score:
        status = "rejected"
    elif score >= policy.review_score:
        status = "review"
    else:
        status = "verified"
    return Verdict(
        status=status,
        score=score,
        distance_m=distance_m,
        elapsed_s=elapsed_s,
        moving_s=moving_s,
        flags=tuple(flags),
        low_confidence=low_confidence,
        record_eligible=status == "verified" and not low_confidence and not record_blocked,
        fixes_used=fixes_used,
    )
