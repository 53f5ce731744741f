"""GPX import at the edge: real Garmin files parse; broken ones fail with a clear code."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from game.pace import Activity, check_track, policy_for
from server.gpx import GpxError, parse_gpx

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
GARMIN_RUN = SHARED / "data" / "tracks" / "garmin-forward-run-dc-2012.gpx"

_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1"'
    ' xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v1">'
)


def _gpx(points: str) -> str:
    return f"{_HEAD}<trk><trkseg>{points}</trkseg></trk></gpx>"


def _pt(lat: float, lon: float, time: str | None, ext: str = "") -> str:
    t = f"<time>{time}</time>" if time else ""
    e = f"<extensions><gpxtpx:TrackPointExtension>{ext}</gpxtpx:TrackPointExtension></extensions>"
    return f'<trkpt lat="{lat}" lon="{lon}"><ele>12.5</ele>{t}{e if ext else ""}</trkpt>'


@pytest.fixture
def garmin_bytes() -> bytes:
    if not GARMIN_RUN.is_file():
        pytest.skip(f"shared track data not found at {GARMIN_RUN.resolve()}")
    return GARMIN_RUN.read_bytes()


def test_garmin_smart_recording_run_parses_with_heart_rate(garmin_bytes: bytes) -> None:
    track = parse_gpx(garmin_bytes)
    assert len(track) == 206
    assert track.t[0] == 1351121380.0  # 2012-10-24T23:29:40Z
    assert np.all(np.diff(track.t) >= 0)
    assert np.count_nonzero(np.diff(track.t) == 0) == 1  # real data: one repeated timestamp
    assert np.median(np.diff(track.t)) == 4.0 and np.diff(track.t).max() == 106.0
    assert np.isfinite(track.hr_bpm).all() and track.hr_bpm[0] == 130.0
    assert abs(track.lat[0] - 38.92747367732227) < 1e-12
    assert np.isnan(track.acc_m).all()  # GPX carries no accuracy


def test_text_and_bytes_parse_alike(garmin_bytes: bytes) -> None:
    a, b = parse_gpx(garmin_bytes), parse_gpx(garmin_bytes.decode())
    assert np.array_equal(a.lat, b.lat) and np.array_equal(a.t, b.t)


def test_garmin_cadence_in_strides_becomes_steps_per_minute() -> None:
    ext = "<gpxtpx:hr>150</gpxtpx:hr><gpxtpx:cad>88</gpxtpx:cad>"
    track = parse_gpx(
        _gpx(
            _pt(45.0, 7.0, "2024-05-01T07:00:00Z", ext)
            + _pt(45.0001, 7.0, "2024-05-01T07:00:05Z", ext)
        )
    )
    assert list(track.cadence_spm) == [176.0, 176.0]
    assert list(track.hr_bpm) == [150.0, 150.0]
    assert track.t[1] - track.t[0] == 5.0


def test_time_without_a_zone_is_utc() -> None:
    track = parse_gpx(_gpx(_pt(45.0, 7.0, "2024-05-01T07:00:00")))
    assert track.t[0] == 1714546800.0


def test_points_of_every_segment_are_read_in_order() -> None:
    seg1 = _pt(45.0, 7.0, "2024-05-01T07:00:00Z")
    seg2 = _pt(45.001, 7.0, "2024-05-01T07:01:00Z")
    doc = f"{_HEAD}<trk><trkseg>{seg1}</trkseg><trkseg>{seg2}</trkseg></trk></gpx>"
    assert list(parse_gpx(doc).lat) == [45.0, 45.001]


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        ("<gpx><trk>", "gpx_malformed"),
        ("not xml at all", "gpx_malformed"),
        (f"{_HEAD}</gpx>", "gpx_no_points"),
        (_gpx(_pt(45.0, 7.0, None)), "gpx_missing_time"),
        (
            _gpx('<trkpt lat="north" lon="7"><time>2024-05-01T07:00:00Z</time></trkpt>'),
            "gpx_malformed",
        ),
    ],
)
def test_broken_files_fail_with_a_clear_code(doc: str, code: str) -> None:
    with pytest.raises(GpxError) as err:
        parse_gpx(doc)
    assert err.value.code == code and err.value.message


def test_point_cap_is_enforced() -> None:
    doc = _gpx("".join(_pt(45.0 + i * 1e-4, 7.0, f"2024-05-01T07:00:{i:02d}Z") for i in range(11)))
    assert len(parse_gpx(doc, max_points=11)) == 11
    with pytest.raises(GpxError) as err:
        parse_gpx(doc, max_points=10)
    assert err.value.code == "gpx_too_many_points"


def test_size_cap_is_enforced() -> None:
    with pytest.raises(GpxError) as err:
        parse_gpx(_gpx(_pt(45.0, 7.0, "2024-05-01T07:00:00Z")), max_bytes=100)
    assert err.value.code == "gpx_too_large"


def test_real_garmin_run_at_backward_pace_is_never_rejected(garmin_bytes: bytes) -> None:
    track = parse_gpx(garmin_bytes)
    stretch = 1.0 / 0.67  # backward running is about a third slower
    backward = replace(track, t=track.t[0] + (track.t - track.t[0]) * stretch)
    for candidate in (track, backward):
        verdict = check_track(
            candidate, policy_for(Activity.BACKWARD_RUN), now=float(candidate.t[-1]) + 60
        )
        assert verdict.status != "rejected", [f.code for f in verdict.flags]
