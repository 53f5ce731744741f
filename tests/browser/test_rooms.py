"""The race and drill rooms in the phone client, against a real server and room.

Python plays the other side of the room with `websockets`: a moderator who starts the race or
the drill (`control start`), and simulated runners whose generated tracks are shifted to the gun
and sent paced in real time. The page (Chromium at phone size) is a registered runner in the
race and a participant in the drill.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

from game.generate import Profile, generate
from tests.browser.conftest import MODERATOR, START, LiveServer
from tests.browser.test_web import sign_up
from tests.conftest import IN_CI

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails in CI) with the reason
    if IN_CI:
        raise
    expect = None  # type: ignore[assignment]

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
#: How long the simulated runners run, paced in real time (s).
LIVE_S = 10.0
#: Seeds whose generated recreational runs have a fix every second (others are sparser).
SEEDS = (2, 4)
#: The leader's distance in the live standings (metres) has reached `d`.
LEADER_AT_LEAST = (
    "d => parseFloat(document.querySelector('#standings tbody tr td.num')?.textContent) >= d"
)


def _token(http: httpx.Client, handle: str) -> str:
    r = http.post("/api/v1/auth/token", data={"username": handle, "password": "backwards!"})
    assert r.status_code == 200, r.text
    tok: str = r.json()["access_token"]
    return tok


def _runner(http: httpx.Client, handle: str) -> str:
    r = http.post("/api/v1/auth/register", json={"handle": handle, "password": "backwards!"})
    assert r.status_code in (200, 201), r.text
    return _token(http, handle)


class Driver(threading.Thread):
    """Runs an async scenario in its own thread (sync Playwright owns the main thread's loop)."""

    def __init__(self, scenario: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.scenario = scenario
        self.error: BaseException | None = None
        self.result: Any = None

    def run(self) -> None:
        try:
            self.result = asyncio.run(self.scenario())
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self, timeout: float = 30.0) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "the room driver did not finish"
        if self.error is not None:
            raise self.error
        return self.result


async def _join(ws_url: str, token: str) -> tuple[Any, dict[str, Any]]:
    ws = await connect(ws_url, compression=None)
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def _until(ws: Any, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame: dict[str, Any] = orjson.loads(await ws.recv())
            if pred(frame):
                return frame


def _gps(track: Any, i: int) -> dict[str, Any]:
    f = track.fix(i)
    frame: dict[str, Any] = {"type": "gps", "seq": i + 1, "t": f.t, "lat": f.lat, "lon": f.lon}
    for name, key in (("acc_m", "acc"), ("speed_mps", "speed"), ("cadence_spm", "cadence")):
        v = getattr(f, name)
        if v is not None:
            frame[key] = float(v)
    for name, key in (("course_deg", "course"), ("heading_deg", "heading")):
        v = getattr(f, name)
        if v is not None:
            frame[key] = float(v) % 360.0
    return frame


def test_a_registered_runner_sees_the_countdown_and_live_standings_of_a_race(
    page: Any, context: Any, live_server: LiveServer, unique_handle: Callable[[str], str]
) -> None:
    ws_base = live_server.url.replace("http://", "ws://") + "/ws/rooms/"
    with httpx.Client(base_url=live_server.url) as http:
        mod = _token(http, MODERATOR)
        scheduled = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        race = http.post(
            "/api/v1/races",
            json={"title": "Browser Reverse 150", "distance_m": 150, "scheduled_at": scheduled},
            headers={"Authorization": f"Bearer {mod}"},
        ).json()
        sim_handles = [unique_handle("sim") for _ in range(2)]
        sims = [_runner(http, handle) for handle in sim_handles]
        for tok in sims:
            r = http.post(
                f"/api/v1/races/{race['id']}/register", headers={"Authorization": f"Bearer {tok}"}
            )
            assert r.status_code == 200, r.text

    sign_up(page, unique_handle("racer"))
    page.goto("/#/race")
    item = page.locator(f"li[data-race='{race['id']}']")
    expect(item).to_contain_text("Browser Reverse 150")
    item.get_by_role("button", name=re.compile("Register")).click()
    expect(page).to_have_url(re.compile(f"#/race/{race['id']}$"))
    expect(page.locator("#race-conn")).to_have_text("Live")
    expect(page.locator("#race-conn")).to_have_attribute("data-role", "runner")
    expect(page.locator("#race-phase")).to_have_text("Lobby")

    async def scenario() -> dict[str, Any]:
        moderator, welcome = await _join(ws_base + race["id"], mod)
        assert welcome["control"] is True
        await moderator.send(
            orjson.dumps({"type": "control", "action": "start", "countdown_s": 3}).decode()
        )
        countdown = await _until(moderator, lambda f: f["type"] == "countdown", 10)
        gun = countdown["start_at"]

        async def run(tok: str, seed: int) -> int:
            ws, hello = await _join(ws_base + race["id"], tok)
            assert hello["role"] == "runner"
            probe = generate(Profile.HONEST_RECREATIONAL, seed, 0.0, 300.0)
            track = dataclasses.replace(probe, t=probe.t - probe.t[0] + gun + 0.2)
            acks = 0

            async def drain() -> None:
                nonlocal acks
                async for raw in ws:
                    frame = orjson.loads(raw)
                    assert frame["type"] != "error", frame
                    acks += frame["type"] == "ack"

            reader = asyncio.create_task(drain())
            for i in range(len(track)):
                if track.t[i] > gun + LIVE_S:
                    break
                await asyncio.sleep(max(0.0, float(track.t[i]) - time.time()))
                await ws.send(orjson.dumps(_gps(track, i)).decode())
            await asyncio.sleep(1.5)  # the last acks (stored every ~1 s)
            await ws.close()
            reader.cancel()
            return acks

        acked = await asyncio.gather(
            *(run(tok, seed) for tok, seed in zip(sims, SEEDS, strict=True))
        )
        await moderator.send(orjson.dumps({"type": "control", "action": "close"}).decode())
        closed = await _until(moderator, lambda f: f.get("event") == "closed", 10)
        await moderator.close()
        return {"acked": acked, "closed": closed}

    driver = Driver(scenario)
    driver.start()
    expect(page.locator("#race-phase")).to_have_text("Countdown", timeout=10_000)
    expect(page.locator("#race-countdown")).to_have_text(re.compile(r"^[1-3]$"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "race-countdown.png"))
    expect(page.locator("#race-phase")).to_have_text("Live", timeout=6_000)
    # the page's own runner moves south (backward) a few metres a second
    for step in range(1, 9):
        context.set_geolocation({**START, "latitude": START["latitude"] - step * 2.0e-5})
        page.wait_for_timeout(1000)
        if step == 2:  # the socket drops: the page reconnects and resends what was not acked
            page.evaluate("window.__retrorunRoom.ws.close(3000)")
        if step == 4:
            page.wait_for_function(LEADER_AT_LEAST, arg=5, timeout=5_000)
            first = float(page.inner_text("#standings tbody tr td.num").split()[0])
    page.wait_for_function(LEADER_AT_LEAST, arg=first + 3)
    expect(page.locator("#standings tr.me")).to_have_count(1)
    for handle in sim_handles:  # other runners by name, not by id
        expect(page.locator("#standings tbody")).to_contain_text(handle)
    expect(page.locator("#you-gap")).to_be_visible()
    expect(page.locator("#race-conn")).to_have_text("Live")
    expect(page.locator("#race-conn")).to_have_attribute("data-reconnects", "1")
    expect(page.locator("#race-gps")).to_contain_text("waiting 0")
    sent, stored = re.findall(r"\d+", page.inner_text("#race-gps"))[:2]
    assert sent == stored and int(sent) >= 8
    page.screenshot(path=str(SHOTS / "race-live.png"))
    page.once("dialog", lambda dialog: dialog.accept())  # "Retire from the race?"
    page.locator("#race-retire").click()
    expect(page.locator("#race-news")).to_contain_text("You retired")
    expect(page.locator("#race-retire")).to_be_hidden()

    result = driver.finish(timeout=30)
    assert all(n > 0 for n in result["acked"])
    expect(page.locator("#race-final")).to_be_visible(timeout=10_000)
    expect(page.locator("#race-phase")).to_have_text("Finished")
    expect(page.locator("#race-conn")).to_have_text("The race is over", timeout=5_000)
    expect(page.locator("#race-results tbody tr")).to_have_count(3)
    page.screenshot(path=str(SHOTS / "race-results.png"))


def test_a_drill_cue_fires_in_the_page_and_the_tap_is_scored(
    page: Any, live_server: LiveServer, unique_handle: Callable[[str], str]
) -> None:
    ws_base = live_server.url.replace("http://", "ws://") + "/ws/rooms/"
    with httpx.Client(base_url=live_server.url) as http:
        mod = _token(http, MODERATOR)
        r = http.post(
            "/api/v1/drills",
            json={
                "title": "Browser switch",
                "level": "beginner",
                "phases": [{"move": "switch_reaction", "duration_s": 5, "switch_cues": 1}],
            },
            headers={"Authorization": f"Bearer {mod}"},
        )
        assert r.status_code == 201, r.text
        drill_id = r.json()["id"]

    sign_up(page, unique_handle("driller"))
    page.goto("/#/drill")
    page.get_by_label("Drill code from your coach").fill(drill_id)
    page.get_by_role("button", name="Open the drill").click()
    expect(page.locator("#drill-title")).to_have_text("Browser switch")
    expect(page.locator("#drill-conn")).to_have_text("Connected")
    page.wait_for_function(
        "n => Number(document.querySelector('#drill-clock').dataset.samples) >= n", arg=3
    )

    async def scenario() -> dict[str, Any]:
        coach, welcome = await _join(ws_base + drill_id, mod)
        assert welcome["control"] is True
        await coach.send(
            orjson.dumps({"type": "control", "action": "start", "countdown_s": 3}).decode()
        )
        results = await _until(coach, lambda f: f["type"] == "drill_results", 25)
        await coach.close()
        return results

    driver = Driver(scenario)
    driver.start()
    tap = page.locator("#tap")
    reactions = []
    for n in (1, 2):
        # polled every frame: `expect` backs off to polling once a second, and under the
        # suite's load that second, the screenshot and the click together could outlast the
        # cue's 3 s tap window ("Too late for that one")
        page.wait_for_function(
            "() => document.querySelector('#tap').classList.contains('go')",
            polling="raf",
            timeout=10_000,
        )
        expect(page.locator("#drill-phase")).to_contain_text("Switch reaction")
        page.wait_for_timeout(250)  # a human reaction, well over the 80 ms anticipation limit
        if n == 1:
            page.screenshot(path=str(SHOTS / "drill-cue.png"))
        tap.click()
        expect(page.locator("#reaction")).to_have_text(re.compile(r"Reaction \d+ ms"))
        reactions.append(int(re.findall(r"\d+", page.inner_text("#reaction"))[0]))
        expect(tap).not_to_have_class(re.compile(r"\bgo\b"))
        if n == 1:
            page.evaluate("document.querySelector('#reaction').textContent = ''")
    assert all(150 <= ms <= 2000 for ms in reactions), reactions
    expect(page.locator("#drill-errors .error")).to_have_count(0)

    results = driver.finish(timeout=25)
    (mine,) = results["scores"]
    assert mine["hits"] == 2 and mine["misses"] == 0
    expect(page.locator("#drill-final")).to_be_visible(timeout=10_000)
    expect(page.locator("#drill-final tr.me")).to_contain_text("2/2")
    expect(page.locator("#drill-conn")).to_have_text("The drill is over", timeout=5_000)
    page.screenshot(path=str(SHOTS / "drill-results.png"))


def test_the_drill_room_shows_a_refused_ack(
    page: Any, unique_handle: Callable[[str], str], live_server: LiveServer
) -> None:
    """Before the start the room refuses acks: the page shows the code, not a silent failure."""
    with httpx.Client(base_url=live_server.url) as http:
        mod = _token(http, MODERATOR)
        drill_id = http.post(
            "/api/v1/drills",
            json={"template": "switch-it"},
            headers={"Authorization": f"Bearer {mod}"},
        ).json()["id"]
    sign_up(page, unique_handle("early"))
    page.goto(f"/#/drill/{drill_id}")
    expect(page.locator("#drill-conn")).to_have_text("Connected")
    expect(page.locator("#drill-status")).to_contain_text("participant")
    expect(page.locator("#tap")).to_be_disabled()
    page.evaluate("window.__retrorunDrillAck(1)")  # the test hook: an ack as a tap sends it
    expect(page.locator("#drill-errors .error")).to_contain_text("drill_not_running")
