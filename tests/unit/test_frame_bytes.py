"""The room frames its fan-out itself (`server.rooms.direct.frame_bytes`): the bytes must be the
ones websockets writes, at each of RFC 6455's three length encodings and their edges."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from server.rooms.direct import frame_bytes


@pytest.mark.parametrize(
    "text",
    ["", "x", "a" * 125, "a" * 126, "é" * 63, "é" * 64, "a" * 65535, "a" * 65536, "🏃" * 20_000],
)
def test_a_framed_text_is_what_websockets_would_send(text: str) -> None:
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert frame_bytes(text) == expected


def test_the_cache_keeps_only_the_last_text() -> None:
    first, second = '{"a":1}', '{"b":22}'
    assert frame_bytes(first) == b"\x81\x07" + first.encode()
    assert frame_bytes(second) == b"\x81\x08" + second.encode()
    assert frame_bytes("".join(['{"a":', "1}"])) == b"\x81\x07" + first.encode()  # equal, not same
