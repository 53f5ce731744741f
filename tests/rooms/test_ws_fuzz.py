"""WebSocket fuzzing: arbitrary frames never crash a room, never close a well-behaved socket
without a documented code, and never lose a fix that was already acknowledged."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from server.store.db import create_engine
from tests.rooms.conftest import LiveServer, World, join, until

TYPES = ["auth", "ping", "ready", "gps", "resume", "control", "ack", "alert_ack", "nope", ""]
ANSWERS = {"error", "pong", "ack", "welcome", "event", "standings", "countdown", "replay"}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.just("x" * 1500),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
frames = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(TYPES)},
        optional={
            "seq": values,
            "t": values,
            "t0": values,
            "lat": values,
            "lon": values,
            "action": values,
            "after_seq": values,
            "cid": values,
            "token": values,
        },
    ).map(lambda d: orjson.dumps(d).decode()),
    st.binary(max_size=64),
    st.sampled_from(
        ["{", "[]", "null", "1e999", '{"type": "ping", "t0": NaN}', '"gps"', "{}" * 50]
    ),
)


def _stored_seqs(url: str, race_id: str, runner: str) -> set[int]:
    async def read() -> set[int]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT first_seq, last_seq FROM race_fix_chunks "
                        "WHERE race_id = :r AND runner_id = :u"
                    ),
                    {"r": race_id, "u": runner},
                )
                return {s for r in rows for s in range(r.first_seq, r.last_seq + 1)}
        finally:
            await engine.dispose()

    return asyncio.run(read())


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(frames, min_size=20, max_size=20))
def test_random_frames_get_answers_and_lose_nothing(
    live: LiveServer, world: World, batch: list[Any]
) -> None:
    async def scenario() -> tuple[str, str, int]:
        runner, organiser = await world.users(2)
        race_id = await world.race(organiser, [runner], 5000.0, gun=time.time() - 60)
        ws, _ = await join(live, race_id, world.tokens[runner])
        good = {
            "type": "gps",
            "seq": 1,
            "t": time.time() - 30,
            "lat": 52.5,
            "lon": 13.4,
            "acc": 5.0,
        }
        await ws.send(orjson.dumps(good).decode())
        assert (await until(ws, lambda f: f["type"] == "ack"))["seq"] == 1
        for raw in batch:
            await ws.send(raw)
            await asyncio.sleep(0.06)  # stay under the per-connection frame rate
        # the socket still works, and answers in order: a fresh fix is acknowledged
        fix2 = {**good, "seq": 10_000, "t": time.time() - 1, "lon": 13.40001}
        await ws.send(orjson.dumps(fix2).decode())
        ack = await until(ws, lambda f: f["type"] == "ack" and f["seq"] == 10_000, timeout=20)
        assert ack["seq"] == 10_000
        await ws.close()
        return race_id, runner, 10_000

    race_id, runner, last = asyncio.run(scenario())
    stored = _stored_seqs(live.settings.database_url, race_id, runner)
    assert {1, last} <= stored  # every acknowledged fix is durable
