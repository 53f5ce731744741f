"""Pace-check configuration: every threshold of PACE_RULES.md lives in one `PacePolicy`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from game.track import DistanceSettings


class Activity(StrEnum):
    BACKWARD_RUN = "backward_run"
    BACKWARD_WALK = "backward_walk"
    RACE = "race"


@dataclass(frozen=True, slots=True)
class Record:
    """One row of the records table: ceilings for a best effort over `distance_m`."""

    name: str
    distance_m: float
    review_mps: float  # fastest known backward speed: faster means review
    reject_mps: float  # 1.15 x envelope: faster scores as likely rejected
    forward_wr_mps: float  # forward world record: faster is impossible on foot


#: PACE_RULES.md "Backward running records" (half and marathon envelope: Riegel from 10 km).
RUN_RECORDS: tuple[Record, ...] = (
    Record("100m", 100.0, 7.59, 8.73, 10.44),
    Record("200m", 200.0, 6.59, 7.58, 10.42),
    Record("400m", 400.0, 5.75, 6.61, 9.30),
    Record("800m", 800.0, 5.33, 6.13, 7.93),
    Record("mile", 1609.344, 4.88, 5.61, 7.21),
    Record("5k", 5000.0, 4.36, 5.01, 6.62),
    Record("10k", 10000.0, 4.29, 4.94, 6.37),
    Record("half", 21097.5, 3.67, 4.72, 6.11),
    Record("marathon", 42195.0, 3.42, 4.53, 5.83),
)


def _walk_records(review_mps: float, reject_mps: float) -> tuple[Record, ...]:
    return tuple(
        Record(
            r.name,
            r.distance_m,
            min(r.review_mps, review_mps),
            min(r.reject_mps, reject_mps),
            r.forward_wr_mps,
        )
        for r in RUN_RECORDS
    )


@dataclass(frozen=True, slots=True)
class PacePolicy:
    """All thresholds of the pace check (PACE_RULES.md rule numbers in the comments)."""

    activity: Activity = Activity.BACKWARD_RUN
    records: tuple[Record, ...] = RUN_RECORDS
    # decision
    review_score: int = 30
    reject_score: int = 60
    # bad input
    max_fixes: int = 5_000_000
    min_fixes: int = 2
    # H1 hygiene
    min_time_s: float = 946_684_800.0  # 2000-01-01T00:00:00Z
    future_tolerance_s: float = 5.0
    bad_points_per_pct: int = 10
    bad_hard_fail_share: float = 0.20
    # H2 accuracy
    max_acc_m: float = 20.0
    low_conf_median_acc_m: float = 10.0
    low_conf_dropped_share: float = 0.20
    default_sigma_m: float = 10.0  # used when a track reports no accuracy at all
    # H3 mock location
    mock_hard_fail: bool = False
    mock_points: int = 30
    # H4 extrapolation
    extrap_dt_s: float = 1.0
    extrap_dt_tol_s: float = 0.05
    extrap_len_tol_m: float = 0.3
    extrap_bearing_tol_deg: float = 1.0
    extrap_min_step_m: float = 5.0
    extrap_min_steps: int = 3
    # G1-G3 gaps
    normal_gap_s: float = 10.0
    break_gap_s: float = 60.0
    sparse_record_share: float = 0.05
    signal_lost_s: float = 30.0
    # G4 jumps
    jump_speed_mps: float = 8.7
    jump_sigma_factor: float = 3.0
    spike_points: int = 2
    spike_speed_mps: float = 6.0  # an excursion out and back faster than this is a spike ...
    spike_return_share: float = 0.5  # ... when the next fix comes back this close
    spike_points_cap: int = 10
    jump_small_points: int = 10
    jump_large_m: float = 200.0
    jump_large_points: int = 40
    jump_hard_fail_m: float = 1000.0
    # S1 best efforts
    best_effort_review_points: int = 40
    best_effort_reject_points: int = 70
    noise_allowance_factor: float = 2.0
    effort_resolution: float = 0.002  # window starts every 0.2% of the distance (see track.py)
    # V1 vehicle, V2 superhuman
    vehicle_window_s: float = 10.0
    vehicle_mps: float = 9.0
    vehicle_points: int = 70
    vehicle_hard_fail_s: float = 60.0
    superhuman_window_s: float = 5.0
    superhuman_mps: float = 12.5
    # A1 acceleration
    accel_mps2: float = 4.0
    accel_hold_s: float = 2.0
    accel_noise_per_sigma: float = 0.5  # threshold += this x local sigma (m/s^2 per m)
    accel_points: int = 15
    accel_points_cap: int = 30
    # N1 speed noise
    cv_speed_window_s: float = 10.0
    cv_span_s: float = 300.0
    cv_max: float = 0.02
    cv_min_speed_mps: float = 1.0
    cv_points: int = 25
    # N2 wobble
    wobble_block_m: float = 200.0
    wobble_max_m: float = 0.05
    wobble_straightness: float = 0.95
    wobble_points: int = 25
    # N3 constant accuracy
    const_acc_share: float = 0.95
    const_acc_min_fixes: int = 30
    const_acc_points: int = 15
    # C1 cadence, C2 stride
    cadence_speed_mps: float = 2.0
    cadence_min_spm: float = 100.0
    cadence_hold_s: float = 30.0
    cadence_points: int = 30
    stride_max_m: float = 1.6
    stride_hold_s: float = 60.0
    stride_points: int = 15
    # B1 backward check
    facing_min_speed_mps: float = 1.5
    facing_max_course_acc_deg: float = 20.0
    facing_away_deg: float = 90.0
    facing_accept_share: float = 0.80
    facing_forward_share: float = 0.50
    facing_min_samples: int = 30
    facing_forward_points: int = 40
    partly_facing_points: int = 20
    # live
    live_signals: bool = False
    # live only: distance credited over this window faster than the review speed of the longest
    # record it covers (S1's ceiling, live) is a `fast_pace` signal; sampled every `_sample_s`
    live_pace_window_s: float = 120.0
    live_pace_sample_s: float = 10.0
    no_progress_s: float = 60.0
    distance: DistanceSettings = field(default_factory=DistanceSettings)

    def with_changes(self, **changes: object) -> PacePolicy:
        """A copy with some thresholds changed (e.g. recalibration)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def policy_for(activity: Activity) -> PacePolicy:
    """The policy for an activity: walks get slower ceilings, races are live and strict."""
    if activity is Activity.BACKWARD_WALK:
        # Above the 1.63 m/s walk-run switch; sustained > 2.5 m/s backward is running.
        return PacePolicy(activity=activity, records=_walk_records(2.5, 3.2))
    if activity is Activity.RACE:
        return PacePolicy(activity=activity, mock_hard_fail=True, live_signals=True)
    return PacePolicy(activity=activity)
