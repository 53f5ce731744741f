"""Compact track storage: delta-encoded integers, compressed. About 6-8 bytes a fix.

Time is kept in milliseconds and positions in 1e-7 degrees (about 1 cm), each as int64 deltas;
optional fields as float32 (NaN for missing). The blob is versioned by its first byte.
"""

from __future__ import annotations

import math
import operator
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from game.track import OPTIONAL_FIELDS, Fix, Track

_VERSION = 1
_POS_SCALE = 1e7
_T_SCALE = 1e3
_NAN = float("nan")
_F32 = struct.Struct("<f")
_OPTIONAL = operator.attrgetter(*OPTIONAL_FIELDS)


def encode_track(track: Track) -> bytes:
    """Pack a track into a compact blob."""
    n = len(track)
    t_ms = np.round(track.t * _T_SCALE).astype(np.int64)
    lat = np.round(track.lat * _POS_SCALE).astype(np.int64)
    lon = np.round(track.lon * _POS_SCALE).astype(np.int64)
    parts = [
        np.diff(col, prepend=np.int64(0)).astype(np.int64).tobytes() for col in (t_ms, lat, lon)
    ]
    present = 0
    optional = []
    for bit, name in enumerate(OPTIONAL_FIELDS):
        col = getattr(track, name)
        if np.isfinite(col).any():
            present |= 1 << bit
            with np.errstate(over="ignore"):  # beyond float32 is stored as ±inf (the format)
                optional.append(col.astype(np.float32).tobytes())
    return _blob(n, present, [*parts, *optional, np.packbits(track.mock).tobytes()])


def _blob(n: int, present: int, parts: list[bytes]) -> bytes:
    """The versioned header (fix count, which optional fields are present), then the body."""
    header = bytes([_VERSION]) + n.to_bytes(4, "little") + present.to_bytes(2, "little")
    return header + _compress(b"".join(parts))


def _compress(body: bytes) -> bytes:
    """zlib at level 6 with a window no larger than the body needs. zlib's default state is
    about 256 KiB, allocated and zeroed on every call: for the room's chunks of a fix or two
    that cost 5 to 90 us a chunk (the allocator decides), where a 512-byte window takes 4. A
    window that covers the body finds the same matches; `zlib.decompress` reads any window."""
    wbits = min(15, max(9, (len(body) - 1).bit_length()))
    packer = zlib.compressobj(6, zlib.DEFLATED, wbits, max(1, wbits - 7))
    return packer.compress(body) + packer.flush()


def encode_fixes(fixes: Sequence[Fix]) -> bytes:
    """`encode_track(Track.from_fixes(fixes))`, byte for byte, without numpy: for the room's
    chunks of a fix or two a second per runner, where numpy's cost per call is most of the
    work (a one-fix chunk: about 150 us through numpy, about 20 here)."""
    n = len(fixes)
    ints: list[int] = []
    for scaled in (  # round half to even, as np.round; deltas as np.diff(prepend=0)
        [round(f.t * _T_SCALE) for f in fixes],
        [round(f.lat * _POS_SCALE) for f in fixes],
        [round(f.lon * _POS_SCALE) for f in fixes],
    ):
        ints.append(scaled[0])
        ints += map(operator.sub, scaled[1:], scaled)
    parts = [struct.pack(f"<{3 * n}q", *ints)]
    present = 0
    for bit, col in enumerate(zip(*map(_OPTIONAL, fixes), strict=True)):
        if col.count(None) == n:
            continue
        values = [_NAN if v is None else v for v in col]
        if any(map(math.isfinite, values)):  # as np.isfinite(col).any()
            present |= 1 << bit
            try:
                parts.append(struct.pack(f"<{n}f", *values))
            except OverflowError:  # beyond float32: numpy makes it inf
                return encode_track(Track.from_fixes(fixes))
    mock = bytearray((n + 7) // 8)  # np.packbits: the first fix in the high bit
    for i, fix in enumerate(fixes):
        if fix.mock:
            mock[i >> 3] |= 0x80 >> (i & 7)
    parts.append(bytes(mock))
    return _blob(n, present, parts)


def decode_track(blob: bytes) -> Track:
    """Unpack a blob made by `encode_track`."""
    if not blob or blob[0] != _VERSION:
        raise ValueError("unknown track blob version")
    n = int.from_bytes(blob[1:5], "little")
    present = int.from_bytes(blob[5:7], "little")
    body = zlib.decompress(blob[7:])
    offset = 0

    def take(dtype: type, count: int) -> npt.NDArray[Any]:
        nonlocal offset
        size = np.dtype(dtype).itemsize * count
        arr: npt.NDArray[Any] = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
        offset += size
        return arr

    t = np.cumsum(take(np.int64, n)) / _T_SCALE
    lat = np.cumsum(take(np.int64, n)) / _POS_SCALE
    lon = np.cumsum(take(np.int64, n)) / _POS_SCALE
    optional = {
        name: take(np.float32, n).astype(np.float64)
        for bit, name in enumerate(OPTIONAL_FIELDS)
        if present & (1 << bit)
    }
    mock = np.unpackbits(take(np.uint8, (n + 7) // 8))[:n].astype(np.bool_)
    return Track.from_arrays(t, lat, lon, mock=mock, **optional)


def as_stored(track: Track) -> Track:
    """`track` exactly as storing and loading it gives it back. Check what you store: a verdict
    or a finish computed over the fixes as sent could differ from a replay of the stored ones
    (the pace check's credit rule can turn 1 cm into metres)."""
    return decode_track(encode_track(track))


def _float32(value: float) -> float:
    """`value` rounded to float32, as `float(np.float32(value))`, at half its cost."""
    try:
        result: float = _F32.unpack(_F32.pack(value))[0]
    except OverflowError:  # beyond float32: numpy makes it inf
        with np.errstate(over="ignore"):
            return float(np.float32(value))
    return result


def stored_fix(fix: Fix) -> Fix:
    """One fix as `as_stored` would give it back (time to 1 ms, positions to 1e-7 degrees,
    the optional fields to float32): the same arithmetic as `encode_track`/`decode_track`."""
    optional = {
        name: _float32(v)
        for name, v in zip(OPTIONAL_FIELDS, _OPTIONAL(fix), strict=True)
        if v is not None
    }
    return Fix(
        round(fix.t * _T_SCALE) / _T_SCALE,  # half to even, as np.round
        round(fix.lat * _POS_SCALE) / _POS_SCALE,
        round(fix.lon * _POS_SCALE) / _POS_SCALE,
        mock=fix.mock,
        **optional,
    )
