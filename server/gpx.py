"""GPX import at the edge: bytes or text -> `Track`, with clear errors.

Reads every track point of every track and segment, in file order, with elevation and the Garmin
TrackPointExtension (v1/v2) values `hr` (bpm), `cad`, `speed` (m/s) and `course` (degrees).
Garmin writes running cadence in *strides* per minute (one foot), so `cad` is doubled into the
steps per minute that `Track.cadence_spm` holds (a cycling `cad` in rpm is not a step count: this
importer is for runs). GPX has no horizontal accuracy: `acc_m` stays NaN and the pace check
treats the run as low confidence. Times without a zone are taken as UTC.
"""

from __future__ import annotations

import datetime as dt
import math
import xml.etree.ElementTree as ET

import gpxpy
import gpxpy.gpx

from game.errors import DomainError
from game.track import Track

DEFAULT_MAX_POINTS = 100_000
DEFAULT_MAX_BYTES = 20_000_000

#: TrackPointExtension child -> (Track field, factor).
_EXTENSIONS: dict[str, tuple[str, float]] = {
    "hr": ("hr_bpm", 1.0),
    "cad": ("cadence_spm", 2.0),  # strides/min -> steps/min
    "speed": ("speed_mps", 1.0),
    "course": ("course_deg", 1.0),
}


class GpxError(DomainError):
    """The GPX file cannot become a track; `code` says why."""

    code = "gpx_invalid"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


def _unix_s(time: dt.datetime) -> float:
    if time.tzinfo is None:
        time = time.replace(tzinfo=dt.UTC)
    return time.timestamp()


def _extension_values(extensions: list[ET.Element]) -> dict[str, float]:
    """Numeric TrackPointExtension values by Track field, whatever the namespace prefix."""
    values: dict[str, float] = {}
    for root in extensions:
        for el in root.iter():
            name = el.tag.rpartition("}")[2]
            if name in _EXTENSIONS and el.text:
                field, factor = _EXTENSIONS[name]
                try:
                    values[field] = float(el.text) * factor
                except ValueError:
                    continue
    return values


def parse_gpx(
    data: bytes | str,
    *,
    max_points: int = DEFAULT_MAX_POINTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Track:
    """Parse a GPX document into a `Track`; raise `GpxError` when it cannot be one."""
    if len(data) > max_bytes:
        raise GpxError("gpx_too_large", f"GPX file is larger than {max_bytes} bytes")
    text = data.decode("utf-8-sig", errors="replace") if isinstance(data, bytes) else data
    try:
        doc = gpxpy.parse(text)
    except (gpxpy.gpx.GPXException, ET.ParseError, ValueError) as exc:
        raise GpxError("gpx_malformed", f"not a readable GPX document: {exc}") from exc
    points = [p for trk in doc.tracks for seg in trk.segments for p in seg.points]
    if not points:
        raise GpxError("gpx_no_points", "the GPX file has no track points")
    if len(points) > max_points:
        raise GpxError(
            "gpx_too_many_points", f"{len(points)} track points; at most {max_points} allowed"
        )
    columns: dict[str, list[float]] = {name: [] for name in ("t", "lat", "lon", "ele_m")}
    columns.update({field: [] for field, _ in _EXTENSIONS.values()})
    for i, p in enumerate(points):
        if p.time is None:
            raise GpxError("gpx_missing_time", f"track point {i} has no <time>")
        ext = _extension_values(p.extensions)
        columns["t"].append(_unix_s(p.time))
        columns["lat"].append(p.latitude)
        columns["lon"].append(p.longitude)
        columns["ele_m"].append(math.nan if p.elevation is None else p.elevation)
        for field, _ in _EXTENSIONS.values():
            columns[field].append(ext.get(field, math.nan))
    return Track.from_arrays(columns.pop("t"), columns.pop("lat"), columns.pop("lon"), **columns)
