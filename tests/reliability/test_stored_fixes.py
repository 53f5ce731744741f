"""A race result must be a function of the stored log: the live pace check over the fixes as
they arrived must credit what a replay of the stored fixes credits (a restart replays them).

Found by the 500-runner `kill -9` test (docs/reliability.md): `server/tracks.py` stores
positions rounded to 1e-7 degrees and times to 1 ms, the room runs the live check on the fixes
as sent, and the live check's credit rule (an anchor that moves once a fix is far enough from
it, `game/pace/live.py`) is discontinuous, so 1 cm in one fix can change a runner's credited
distance by metres. Fixed: the room checks each fix as it will be stored
(`server.tracks.stored_fix`), and uploads are verified as stored (`server.tracks.as_stored`).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from game import races
from game.track import Fix, Track
from server.tracks import as_stored, decode_track, encode_fixes, encode_track, stored_fix
from tests.reliability.harness import _crossing_track
from tests.rooms.conftest import shifted

DISTANCE_M = 150.0
SEED = 100 + 2 * 460  # runner 460 of the 500-runner race


def _finish(fixes: list[Fix], gun: float) -> float | None:
    live = races.RaceLive(DISTANCE_M, gun)
    now = time.time()
    for fix in fixes:
        outcome = live.add_fix("r", fix, max(now, fix.t))
        if outcome.finish is not None:
            return outcome.finish.time_s
    return None


def _race_track() -> tuple[list[Fix], float]:
    probe = _crossing_track(DISTANCE_M, SEED)
    gun = time.time() - float(probe.t[-1] - probe.t[0]) - 5.0
    return list(shifted(probe, gun + 0.5).fixes()), gun


def test_storing_and_loading_a_track_rounds_each_fix_by_at_most_1_cm_and_1_ms() -> None:
    fixes, _ = _race_track()
    stored = list(decode_track(encode_track(Track.from_fixes(fixes))).fixes())
    assert len(stored) == len(fixes)
    for a, b in zip(fixes, stored, strict=True):
        assert abs(a.t - b.t) <= 0.0005 + 1e-9
        assert abs(a.lat - b.lat) <= 0.5e-7 + 1e-12 and abs(a.lon - b.lon) <= 0.5e-7 + 1e-12


def test_the_fix_the_room_checks_is_the_fix_it_stores() -> None:
    fixes, gun = _race_track()
    stored = list(decode_track(encode_track(Track.from_fixes(fixes))).fixes())
    checked = [stored_fix(f) for f in fixes]  # what server/rooms/room.py applies
    assert checked == stored
    assert _finish(checked, gun) == _finish(stored, gun)
    # and the rounding matters: over the raw fixes the finish is another one
    assert _finish(fixes, gun) != pytest.approx(_finish(stored, gun), abs=0.002)


_maybe = st.one_of(st.none(), st.floats(0.0, 400.0, allow_nan=False))
_any_value = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))


def _tracks(max_size: int, **optional: st.SearchStrategy[float | None]) -> st.SearchStrategy:
    """Lists of fixes with the given optional fields (the others missing)."""
    fix = st.builds(
        Fix,
        st.floats(946684800.0, 4102444800.0),
        st.floats(-90.0, 90.0),
        st.floats(-180.0, 180.0),
        mock=st.booleans(),
        **optional,
    )
    return st.lists(fix, min_size=1, max_size=max_size)


_SENT = ("acc_m", "speed_mps", "course_deg", "heading_deg", "cadence_spm")


@settings(max_examples=200, deadline=None)
@given(_tracks(20, **dict.fromkeys(_SENT, _maybe)))
def test_stored_fix_is_exactly_what_storage_gives_back(fixes: list[Fix]) -> None:
    fixes.sort(key=lambda f: f.t)
    assert [stored_fix(f) for f in fixes] == list(as_stored(Track.from_fixes(fixes)).fixes())


@settings(max_examples=300, deadline=None)
@given(
    _tracks(
        40,
        **{
            **dict.fromkeys((*_SENT, "course_acc_deg", "hr_bpm"), _maybe),
            "acc_m": _any_value,  # NaN, inf, beyond float32
            "ele_m": _any_value,
        },
    )
)
def test_the_room_s_chunk_encoder_writes_the_same_bytes_as_the_track_encoder(
    fixes: list[Fix],
) -> None:
    """The room stores its chunks with `encode_fixes` (no numpy); uploads and replays use
    `encode_track`/`decode_track`: one format, whichever wrote it (NaN, inf, beyond float32,
    missing fields, mock bits past one byte)."""
    assert encode_fixes(fixes) == encode_track(Track.from_fixes(fixes))
