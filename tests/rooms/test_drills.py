"""Coordination drills through a real server: phones with skewed clocks fire every cue together,
reactions are scored from the participants' own tap times, bad acks are refused, and the results
reach the drill API, challenges and profiles.

Every client runs a fake clock (real time + a skew of -2, 0, +2 s ...). The server and the
clients share one machine clock, so a client's true offset (server - client) is exactly -skew;
the offset the room estimates is off by at most half the round trip of the exchange it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection

from game import drills
from tests.rooms.conftest import LiveServer, World, join, recv

#: Hold first (steadiness), then a reaction phase: with 6 s and 2 switch cues the random moments
#: have no slack, so the cues are fixed: hold at +0 (id 1), reactions at +5, +7, +9 (ids 2-4).
PHASES = [
    {"move": "balance_hold", "duration_s": 5, "prompt": "left leg"},
    {"move": "switch_reaction", "duration_s": 6, "switch_cues": 2},
]
SCORED = (2, 3, 4)


class Phone:
    """A participant's phone: a websockets client on its own (skewed) clock."""

    def __init__(self, ws: ClientConnection, welcome: dict[str, Any], skew: float) -> None:
        self.ws, self.welcome, self.skew = ws, welcome, skew
        self.frames: list[dict[str, Any]] = []
        self.offset = 0.0  # server - client, as the room estimates it (its `clock` frames)
        self.rtt = 0.0
        self._new = asyncio.Event()
        self.closed: int | None = None
        self._reader = asyncio.create_task(self._read())
        self._cid = 0

    def now(self) -> float:
        return time.time() + self.skew

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(orjson.loads(raw))
                self._new.set()
        except Exception:
            pass
        finally:
            self.closed = self.ws.close_code
            self._new.set()

    async def wait(self, pred: Any, timeout: float = 20.0, start: int = 0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            seen = start
            while True:
                for f in self.frames[seen:]:
                    if pred(f):
                        return f
                seen = len(self.frames)
                if self.closed is not None:
                    raise AssertionError(f"closed ({self.closed}) while waiting")
                self._new.clear()
                await self._new.wait()

    async def send(self, frame: dict[str, Any]) -> str:
        self._cid += 1
        cid = f"c{self._cid}"
        await self.ws.send(orjson.dumps({**frame, "cid": cid}).decode())
        return cid

    async def answer(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame and wait for the ack or error that echoes its cid."""
        cid = await self.send(frame)
        return await self.wait(lambda f: f.get("cid") == cid or f.get("ref") == cid)

    async def sync(self, samples: int = 5) -> None:
        """Ping/pong exchanges on the fake clock, each reported to the room with `sync`."""
        for _ in range(samples):
            t0 = self.now()
            cid = await self.send({"type": "ping", "t0": t0})
            pong = await self.wait(lambda f, c=cid: f["type"] == "pong" and f.get("cid") == c)
            t3 = self.now()
            clock = await self.answer(
                {"type": "sync", "t0": t0, "t1": pong["t1"], "t2": pong["t2"], "t3": t3}
            )
            assert clock["type"] == "clock", clock
            self.offset, self.rtt = clock["offset"], clock["rtt"]

    def local(self, server_time: float) -> float:
        """A server time on this phone's clock."""
        return server_time - self.offset

    async def tap(self, cue: dict[str, Any], reaction_ms: float, **extra: Any) -> dict[str, Any]:
        """React `reaction_ms` after the cue fired on this phone; the ack carries the tap time."""
        t = self.local(cue["at"]) + reaction_ms / 1000.0
        await asyncio.sleep(max(0.0, t - self.now()))
        return await self.answer({"type": "ack", "cue": cue["id"], "t": t, **extra})

    async def cue(self, cue_id: int, start: int = 0) -> dict[str, Any]:
        return await self.wait(lambda f: f["type"] == "cue" and f["id"] == cue_id, start=start)

    async def until_closed(self, timeout: float = 10.0) -> int | None:
        async with asyncio.timeout(timeout):
            while self.closed is None:
                self._new.clear()
                await self._new.wait()
        return self.closed

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        with contextlib.suppress(Exception):
            await self._reader


async def _phone(live: LiveServer, room: str, token: str, skew: float) -> Phone:
    ws, welcome = await join(live, room, token)
    return Phone(ws, welcome, skew)


async def _drill(http: httpx.AsyncClient, coach_token: str, title: str) -> str:
    r = await http.post(
        "/api/v1/drills",
        json={"title": title, "level": "beginner", "phases": PHASES},
        headers={"Authorization": f"Bearer {coach_token}"},
    )
    assert r.status_code == 201, r.text
    drill_id: str = r.json()["id"]
    return drill_id


async def _poll(fetch: Any, pred: Any, timeout: float = 10.0) -> Any:
    """Poll a read model (projections run behind the log) until `pred` holds."""
    async with asyncio.timeout(timeout):
        while True:
            value = await fetch()
            if pred(value):
                return value
            await asyncio.sleep(0.1)


async def _profile(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    r = await http.get("/api/v1/me/profile", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _expected(plan: dict[str, dict[int, float]]) -> tuple[dict[str, dict[str, Any]], float]:
    scores = {}
    for pid, reactions in plan.items():
        s = drills.score_participant(pid, len(SCORED), reactions)
        scores[pid] = {"hits": s.hits, "misses": s.misses, "median_ms": s.median_ms}
        scores[pid]["best_ms"] = s.best_ms
    by_cue = {c: [r[c] for r in plan.values() if c in r] for c in SCORED}
    return scores, drills.group_sync_score(by_cue, len(plan))


async def test_skewed_phones_fire_together_and_acks_are_scored_from_their_own_clocks(
    live: LiveServer, world: World
) -> None:
    (coach,) = await world.users(1, "moderator")
    ann, bob, cy, dee, eve = await world.users(5)
    tok = world.tokens
    async with httpx.AsyncClient(base_url=live.http_url) as http:
        drill_id = await _drill(http, tok[coach], "Skewed clocks")
        # a drill-count challenge ann joined: the finished drill counts for it
        now = datetime.now(UTC)
        r = await http.post(
            "/api/v1/challenges",
            json={
                "title": "Drill week",
                "kind": "drills",
                "target_value": 1,
                "starts_at": (now - timedelta(hours=1)).isoformat(),
                "ends_at": (now + timedelta(days=1)).isoformat(),
            },
            headers={"Authorization": f"Bearer {tok[coach]}"},
        )
        assert r.status_code == 201, r.text
        challenge = r.json()["id"]
        auth_ann = {"Authorization": f"Bearer {tok[ann]}"}
        assert (
            await http.post(f"/api/v1/challenges/{challenge}/join", headers=auth_ann)
        ).is_success

        host = await _phone(live, drill_id, tok[coach], 0.0)
        assert host.welcome["role"] == "coach" and host.welcome["control"] is True
        phones = {
            ann: await _phone(live, drill_id, tok[ann], -2.0),
            bob: await _phone(live, drill_id, tok[bob], 0.0),
            cy: await _phone(live, drill_id, tok[cy], +2.0),
        }
        assert phones[ann].welcome["role"] == "participant"
        assert phones[ann].welcome["snapshot"]["drill"]["status"] == "scheduled"
        # no clock yet: an ack cannot be judged (and the drill is not running anyway)
        refused = await phones[bob].answer({"type": "ack", "cue": 2, "t": time.time()})
        assert refused["code"] == "drill_not_running", refused
        # a participant cannot start the drill
        assert (await phones[ann].answer({"type": "control", "action": "start"}))[
            "code"
        ] == "forbidden"
        await asyncio.gather(*(p.sync() for p in phones.values()))
        for p in phones.values():  # true offset -skew, error bounded by half the round trip
            assert abs(p.offset - -p.skew) <= p.rtt / 2 + 1e-4, (p.skew, p.offset, p.rtt)
        bad = await phones[ann].answer(
            {"type": "sync", "t0": 10.0, "t1": 5.0, "t2": 4.0, "t3": 9.0}
        )
        assert bad["code"] == "invalid_sync"

        await host.send({"type": "control", "action": "start", "countdown_s": 3})
        started = await phones[ann].wait(lambda f: f.get("event") == "started")
        assert started["scored_cues"] == 3 and started["cues"] == 4

        # every phone holds every cue before it fires; fired on each phone's own clock, the cues
        # coincide in real time within the clock estimates' error bounds
        trio = list(phones.values())

        async def check_fire_times() -> None:
            for c in (1, *SCORED):
                mine = [await p.cue(c) for p in trio]
                assert len({(m["at"], m["move"], m["scored"]) for m in mine}) == 1, mine
                assert all(time.time() < m["at"] for m in mine)  # in hand before it fires
                fires = [p.local(m["at"]) - p.skew for p, m in zip(trio, mine, strict=True)]
                bound = sum(p.rtt / 2 for p in trio)
                assert max(fires) - min(fires) <= bound + 1e-4, (c, fires)
            cue1 = await phones[ann].cue(1)
            assert cue1["move"] == "balance_hold" and not cue1["scored"]
            phase_frames = [f["index"] for f in phones[cy].frames if f["type"] == "phase"]
            assert phase_frames == [0, 1]

        checker = asyncio.create_task(check_fire_times())

        async def ann_does() -> None:
            p = phones[ann]
            held = await p.tap(await p.cue(1), 900, steadiness=0.6)
            assert held["type"] == "ack" and held["steadiness"] == 0.6, held
            again = await p.tap(await p.cue(1), 950, steadiness=0.7)
            assert again["code"] == "ack_duplicate"
            for c, ms in ((2, 250), (3, 300), (4, 350)):
                got = await p.tap(await p.cue(c), ms)
                assert got["type"] == "ack" and got["reaction_ms"] == ms, got
            dup = await p.tap(await p.cue(2), 400)
            assert dup["code"] == "ack_duplicate"
            unknown = await p.answer({"type": "ack", "cue": 99, "t": p.now()})
            assert unknown["code"] == "unknown_cue"

        async def bob_does() -> None:
            p = phones[bob]
            plain = await p.tap(await p.cue(1), 500)
            assert plain["code"] == "cue_not_scored"
            await p.cue(2)  # announced ahead: a tap now is before the cue fires
            early = await p.answer({"type": "ack", "cue": 2, "t": p.now()})
            assert early["code"] == "ack_early"
            got = await p.tap(await p.cue(2), 260)
            assert got["reaction_ms"] == 260
            got = await p.tap(await p.cue(3), 280)
            assert got["reaction_ms"] == 280
            # a tap claimed in the future (relative to the ack's arrival) is absurd
            c4 = await p.cue(4)
            future = await p.answer({"type": "ack", "cue": 4, "t": p.local(c4["at"]) + 0.3})
            assert future["code"] == "ack_absurd"
            # bob's phone drops and comes back: the account's clock carries over, the stored
            # acks are in the welcome, missed broadcasts are replayed, and bob carries on
            last_seq = max(f["seq"] for f in p.frames if "seq" in f)
            epoch = p.welcome["epoch"]
            await p.close()
            back = await _phone(live, drill_id, tok[bob], p.skew)
            back.offset, back.rtt = p.offset, p.rtt
            phones[bob] = back
            you = back.welcome["snapshot"]["you"]
            assert you["acked"] == {"2": 260.0, "3": 280.0}
            assert you["clock"]["offset"] == p.offset
            assert 4 in {c["id"] for c in back.welcome["snapshot"]["cues"]}
            await back.send({"type": "resume", "after_seq": last_seq, "epoch": epoch})
            got = await back.tap(c4, 310)
            assert got["reaction_ms"] == 310

        async def cy_does() -> None:
            p = phones[cy]
            held = await p.tap(await p.cue(1), 1200, steadiness=0.8)
            assert held["steadiness"] == 0.8
            too_fast = await p.cue(2)
            too_fast = await p.tap(too_fast, 50)
            assert too_fast["code"] == "ack_absurd"
            for c, ms in ((2, 240), (3, 320), (4, 330)):
                got = await p.tap(await p.cue(c), ms)
                assert got["reaction_ms"] == ms, got

        async def late_joiner() -> None:
            await phones[ann].wait(lambda f: f["type"] == "phase" and f["index"] == 1)
            c2 = await phones[ann].cue(2)
            await asyncio.sleep(max(0.0, c2["at"] + 0.5 - time.time()))
            p = await _phone(live, drill_id, tok[dee], +1.0)
            phones[dee] = p
            snap = p.welcome["snapshot"]
            assert snap["drill"]["status"] == "running"
            assert snap["phase"]["index"] == 1 and snap["phase"]["move"] == "switch_reaction"
            assert {c["id"] for c in snap["cues"]} >= {2, 3}
            await p.sync()
            c3 = next(c for c in snap["cues"] if c["id"] == 3)
            late, got = await asyncio.gather(p.tap(c3, 3500), p.tap(await p.cue(4), 400))
            assert late["code"] == "ack_late"
            assert got["reaction_ms"] == 400

        await asyncio.gather(ann_does(), bob_does(), cy_does(), late_joiner(), checker)
        results = await host.wait(lambda f: f["type"] == "drill_results", timeout=20)

        plan = {
            ann: {2: 250.0, 3: 300.0, 4: 350.0},
            bob: {2: 260.0, 3: 280.0, 4: 310.0},
            cy: {2: 240.0, 3: 320.0, 4: 330.0},
            dee: {4: 400.0},
        }
        expected, sync = _expected(plan)
        got = {s["participant_id"]: s for s in results["scores"]}
        assert set(got) == set(plan)  # eve never came; the coach never acked
        for pid, want in expected.items():
            assert {k: got[pid][k] for k in want} == want, pid
        assert got[ann]["steadiness"] == 0.6 and got[cy]["steadiness"] == 0.8
        assert got[bob]["steadiness"] is None and got[dee]["misses"] == 2
        assert results["sync_score"] == sync and results["scored_cues"] == 3
        assert await host.until_closed() == 4504

        r = await http.get(f"/api/v1/drills/{drill_id}")
        body = r.json()
        assert body["status"] == "finished" and body["sync_score"] == sync
        assert {s["participant_id"]: s["median_ms"] for s in body["scores"]} == {
            pid: s["median_ms"] for pid, s in expected.items()
        }
        # drill-count challenge, XP and badges (the projection runs behind the log)
        progress = await _poll(
            lambda: http.get(f"/api/v1/challenges/{challenge}/progress", headers=auth_ann),
            lambda r: r.json().get("value") == 1.0,
        )
        assert progress.json()["completed"] is True
        prof = await _poll(lambda: _profile(http, tok[ann]), lambda p: p["xp"] >= 10)
        assert "quick_reflexes" in {b["code"] for b in prof["badges"]}  # median 300 ms
        assert "quick_reflexes" not in {
            b["code"] for b in (await _profile(http, tok[cy]))["badges"]
        }
        assert (await _profile(http, tok[eve]))["xp"] == 0
        # a joiner after the finish gets the results and is told not to come back
        ws, welcome = await join(live, drill_id, tok[eve])
        assert welcome["snapshot"]["results"]["sync_score"] == sync
        with contextlib.suppress(Exception):
            await recv(ws)
        assert ws.close_code == 4504
        for p in (host, *phones.values()):
            await p.close()


async def test_a_tight_group_outscores_a_loose_one_and_earns_in_sync(
    live: LiveServer, world: World
) -> None:
    (coach,) = await world.users(1, "moderator")
    people = await world.users(6)
    tok = world.tokens
    tight_plan = dict(
        zip(
            people[:3],
            (
                {2: 250.0, 3: 300.0, 4: 270.0},
                {2: 255.0, 3: 296.0, 4: 265.0},
                {2: 262.0, 3: 310.0, 4: 280.0},
            ),
            strict=True,
        )
    )
    loose_plan = dict(
        zip(
            people[3:],
            (
                {2: 200.0, 3: 250.0, 4: 1500.0},
                {2: 600.0, 3: 900.0, 4: 300.0},
                {2: 1100.0, 3: 400.0, 4: 700.0},
            ),
            strict=True,
        )
    )

    async def run(plan: dict[str, dict[int, float]], title: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=live.http_url) as http:
            drill_id = await _drill(http, tok[coach], title)
        host = await _phone(live, drill_id, tok[coach], 0.0)
        phones = [
            await _phone(live, drill_id, tok[pid], skew)
            for pid, skew in zip(plan, (-2.0, 0.0, 2.0), strict=True)
        ]
        await asyncio.gather(*(p.sync() for p in phones))
        await host.send({"type": "control", "action": "start", "countdown_s": 3})

        async def act(p: Phone, reactions: dict[int, float]) -> None:
            for c, ms in reactions.items():
                got = await p.tap(await p.cue(c), ms)
                assert got.get("reaction_ms") == ms, got

        await asyncio.gather(*(act(p, r) for p, r in zip(phones, plan.values(), strict=True)))
        results = await host.wait(lambda f: f["type"] == "drill_results", timeout=20)
        for p in (host, *phones):
            await p.close()
        return results

    tight, loose = await asyncio.gather(run(tight_plan, "Tight group"), run(loose_plan, "Loose"))
    assert tight["sync_score"] == _expected(tight_plan)[1]
    assert loose["sync_score"] == _expected(loose_plan)[1]
    assert tight["sync_score"] > loose["sync_score"]
    assert tight["sync_score"] >= 0.9 > loose["sync_score"]
    async with httpx.AsyncClient(base_url=live.http_url) as http:
        prof = await _poll(
            lambda: _profile(http, tok[people[0]]),
            lambda p: "in_sync" in {b["code"] for b in p["badges"]},
        )
        assert prof["xp"] >= 10
        loose_prof = await _profile(http, tok[people[3]])
        assert "in_sync" not in {b["code"] for b in loose_prof["badges"]}
        board = (await http.get(f"/api/v1/leaderboards/xp:all/around/{people[0]}")).json()
        xp = {e["runner_id"]: e["score"] for e in board["entries"]}
        assert xp.get(people[0]) == 10.0  # the drill's XP on the XP board
