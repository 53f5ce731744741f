"""Batch driver: a whole track -> `Verdict`, fully vectorised."""

from __future__ import annotations

import numpy as np

from game.pace.clean import clean
from game.pace.policy import PacePolicy
from game.pace.rules import RULES
from game.pace.verdict import Flag, Verdict, decide, evidence
from game.track import Track, elapsed_s


def _bad_input(
    code: str, message: str, policy: PacePolicy, flags: list[Flag] | None = None, **ev: object
) -> Verdict:
    bad = Flag(code, message, 0, True, evidence(**ev))
    return decide([*(flags or []), bad], policy, low_confidence=True, record_blocked=True)


def check_track(track: Track, policy: PacePolicy | None = None, *, now: float) -> Verdict:
    """Check an uploaded (or finished live) track; `now` is server time in Unix seconds."""
    p = policy or PacePolicy()
    n = len(track)
    if n == 0:
        return _bad_input("empty_track", "the track has no fixes", p)
    if n > p.max_fixes:
        return _bad_input("too_many_fixes", f"{n} fixes is more than {p.max_fixes}", p, count=n)
    with np.errstate(all="ignore"):
        cleaning = clean(track, p, float(now))
        prep = cleaning.prepared
        if prep is None:
            return _bad_input(
                "too_few_fixes", "fewer than two usable fixes", p, cleaning.flags, count=n
            )
        flags = list(cleaning.flags)
        for rule in RULES:
            flags.extend(rule(prep, p))
    return decide(
        flags,
        p,
        distance_m=float(prep.steps.cum_m[-1]),
        elapsed_s=elapsed_s(prep.t),
        moving_s=float(np.sum(prep.dt[prep.steps.moving])),  # = moving_s(t, moving)
        low_confidence=cleaning.low_confidence,
        record_blocked=cleaning.record_blocked or bool(track.mock.any()),
        fixes_used=int(prep.t.shape[0]),
    )
