"""Privacy zones: saved places whose surroundings are cut from every shared view of a track.

A zone is a centre and a radius (100-1000 m). A fix lies in a zone when its great-circle
distance to the centre is at most the radius. Shared views drop every such fix, so a track
that starts or ends at home shows neither its start nor its end point there. The runner's own
view and the moderators' view are never masked (the shell decides who gets which view).

Who sees a runner's activities is `Visibility`; `may_see_activities` is the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from game.errors import DomainError
from game.track import OPTIONAL_FIELDS, BoolArray, FloatArray, Track, haversine_m

IntArray = npt.NDArray[np.int64]

MIN_RADIUS_M = 100.0
MAX_RADIUS_M = 1000.0
MAX_ZONES = 5
_FIELDS = ("t", "lat", "lon", "mock", *OPTIONAL_FIELDS)


class Visibility(StrEnum):
    """Who sees a runner's activity list (distance, time, status, date) and, for club-mates,
    the shared (zone-masked) track."""

    EVERYONE = "everyone"
    CLUB = "club"
    NOBODY = "nobody"


@dataclass(frozen=True, slots=True)
class Zone:
    """A privacy zone: centre in degrees, radius in metres."""

    lat: float
    lon: float
    radius_m: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lat) and -90.0 <= self.lat <= 90.0):
            raise DomainError("zone latitude must be within -90..90", code="invalid")
        if not (np.isfinite(self.lon) and -180.0 <= self.lon <= 180.0):
            raise DomainError("zone longitude must be within -180..180", code="invalid")
        if not (np.isfinite(self.radius_m) and MIN_RADIUS_M <= self.radius_m <= MAX_RADIUS_M):
            raise DomainError(
                f"zone radius must be {MIN_RADIUS_M:.0f}-{MAX_RADIUS_M:.0f} m", code="invalid"
            )


def check_zones(zones: Sequence[Zone]) -> None:
    """Refuse more than `MAX_ZONES` zones (each zone checks itself when built)."""
    if len(zones) > MAX_ZONES:
        raise DomainError(f"at most {MAX_ZONES} privacy zones", code="invalid")


def hidden(lat: FloatArray, lon: FloatArray, zones: Sequence[Zone]) -> BoolArray:
    """True for each position inside any zone (vectorised; a NaN position is hidden too,
    since where it was cannot be shown to be outside every zone)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if not zones:
        return np.zeros(lat.shape[0], dtype=np.bool_)
    out: BoolArray = ~(np.isfinite(lat) & np.isfinite(lon))
    for z in zones:
        d = haversine_m(lat, lon, np.full_like(lat, z.lat), np.full_like(lon, z.lon))
        out = out | (d <= z.radius_m)
    return np.asarray(out, dtype=np.bool_)


def visible_indices(track: Track, zones: Sequence[Zone]) -> IntArray:
    """Indices of the fixes a shared view may show, in order."""
    return np.flatnonzero(~hidden(track.lat, track.lon, zones)).astype(np.int64)


def mask_track(track: Track, zones: Sequence[Zone]) -> Track:
    """The track with every fix inside any zone removed (start and end included)."""
    keep = ~hidden(track.lat, track.lon, zones)
    return Track(**{name: getattr(track, name)[keep] for name in _FIELDS})


def may_see_activities(
    visibility: Visibility, *, is_owner: bool, is_moderator: bool, shares_club: bool
) -> bool:
    """Whether a viewer sees a runner's activity list: the runner and moderators always;
    otherwise by the runner's choice (everyone signed in, club-mates, or nobody)."""
    if is_owner or is_moderator:
        return True
    if visibility is Visibility.EVERYONE:
        return True
    if visibility is Visibility.CLUB:
        return shares_club
    return False


def may_see_shared_track(
    visibility: Visibility, *, is_owner: bool, is_moderator: bool, shares_club: bool
) -> bool:
    """Whether a viewer gets the shared (zone-masked) track: club-mates when the runner's
    visibility is not `nobody`; strangers never. Owner and moderators see the full track."""
    if is_owner or is_moderator:
        return True
    return shares_club and visibility is not Visibility.NOBODY
