"""The pace check: one rule table (`rules.RULES` after `clean.clean`), two drivers.

`check_track` is the batch driver for uploads; `LiveCheck` is the incremental driver for live
races, and its final verdict equals the batch verdict on the same fixes.
"""

from __future__ import annotations

from game.pace.batch import check_track
from game.pace.live import LiveCheck, check_fixes
from game.pace.policy import Activity, PacePolicy, Record, policy_for
from game.pace.verdict import Flag, Verdict

__all__ = [
    "Activity",
    "Flag",
    "LiveCheck",
    "PacePolicy",
    "Record",
    "Verdict",
    "check_fixes",
    "check_track",
    "policy_for",
]
