"""The moderator console in the phone client: a flagged run's track on the canvas plot, the
decision (the run then counts on the weekly board), and race control in the race room.

Python plays the runners with `websockets`; the page (Chromium at phone size) is the moderator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from game.generate import Profile
from tests.api.helpers import points, recent_track
from tests.browser.conftest import MODERATOR, LiveServer
from tests.browser.test_rooms import SHOTS, Driver, _join, _runner, _token
from tests.conftest import IN_CI

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails in CI) with the reason
    if IN_CI:
        raise
    expect = None  # type: ignore[assignment]

#: Count the canvas pixels of one colour (within a tolerance), in the page.
PIXELS_OF = """([sel, rgb]) => {
  const c = document.querySelector(sel);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.abs(d[i] - rgb[0]) < 24 && Math.abs(d[i + 1] - rgb[1]) < 24
        && Math.abs(d[i + 2] - rgb[2]) < 24) n++;
  }
  return n;
}"""
YELLOW, RED, GREEN = (255, 212, 0), (255, 107, 107), (76, 255, 138)


def sign_in(page: Any, handle: str, password: str = "backwards!") -> None:
    page.goto("/#/signin")
    page.fill("#handle", handle)
    page.fill("#password", password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#tabs")).to_be_visible()


def test_a_moderator_reviews_a_flagged_run_on_the_track_plot_and_approves_it(
    page: Any, live_server: LiveServer, unique_handle: Callable[[str], str]
) -> None:
    runner = unique_handle("mocky")
    with httpx.Client(base_url=live_server.url) as http:
        tok = _runner(http, runner)
        auth = {"Authorization": f"Bearer {tok}"}
        # shorter than the 800 m run test_web ranks first on the same weekly board
        track = recent_track(Profile.MOCK_LOCATION, seed=2, distance_m=300)
        body = {"points": points(track)}
        run = http.post("/api/v1/runs", json=body, headers=auth).json()
        runner_id = http.get("/api/v1/me", headers=auth).json()["id"]
        week = datetime.fromisoformat(run["ended_at"]).isocalendar()
        weekly = f"weekly:{week.year}-W{week.week:02d}"
        # held back for review: not on the weekly board yet
        assert run["status"] == "review"
        assert http.get(f"/api/v1/leaderboards/{weekly}/around/{runner_id}").status_code == 404

    sign_in(page, MODERATOR)
    page.locator("#tabs").get_by_role("link", name="More").click()
    page.click("#to-mod")
    expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    page.locator(f"a[href='#/mod/{run['id']}']").click()
    expect(page.locator("#review-flags")).to_contain_text("mock_location")

    plot = page.locator("#track-plot")
    expect(plot).to_have_attribute("data-points", str(run["fix_count"]))
    flagged = [f for f in run["flags"] if "t" in f["evidence"] or "index" in f["evidence"]]
    expect(plot).to_have_attribute("data-stretches", str(len(flagged)))
    assert flagged, run["flags"]
    expect(page.locator("#track-legend")).to_contain_text("mock_location: fixes")
    assert page.evaluate(PIXELS_OF, ["#track-plot", YELLOW]) > 200  # the path
    assert page.evaluate(PIXELS_OF, ["#track-plot", RED]) > 50  # the flagged stretch
    assert page.evaluate(PIXELS_OF, ["#track-plot", GREEN]) > 20  # the start marker
    # the crop tools dim what a crop would drop
    page.locator("#crop-tools summary").click()
    page.locator("#crop-first").fill("20")
    expect(page.locator("#crop-text")).to_have_text(
        f"Keep fixes 20\u2013{run['fix_count']} of {run['fix_count']}"
    )
    expect(plot).to_have_attribute("data-kept", str(run["fix_count"] - 19))
    page.locator("#crop-first").fill("1")
    page.screenshot(path=str(SHOTS / "moderation-review.png"))

    page.click("#approve")  # no reason yet: the API's problem detail is shown
    expect(page.locator(".error")).to_contain_text("reason")
    page.fill("#reason", "spotter confirmed the run")
    page.click("#approve")
    expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    expect(page.locator(f"a[href='#/mod/{run['id']}']")).to_have_count(0)

    # approved: the run counts, and its runner is ranked on the weekly board
    with httpx.Client(base_url=live_server.url) as http:
        assert http.get(f"/api/v1/runs/{run['id']}", headers=auth).json()["status"] == "verified"
        around = http.get(f"/api/v1/leaderboards/{weekly}/around/{runner_id}")
        assert around.status_code == 200, around.text
    page.goto(f"/#/boards/{weekly}")
    row = page.locator("table.board tbody tr", has_text=runner)
    expect(row).to_have_count(1)
    assert int(row.locator("td").first.inner_text()) >= 1


def test_a_moderator_controls_a_live_race_from_the_race_room(
    page: Any, live_server: LiveServer, unique_handle: Callable[[str], str]
) -> None:
    ws_base = live_server.url.replace("http://", "ws://") + "/ws/rooms/"
    with httpx.Client(base_url=live_server.url) as http:
        mod = _token(http, MODERATOR)
        scheduled = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        race = http.post(
            "/api/v1/races",
            json={"title": "Controlled Reverse 200", "distance_m": 200, "scheduled_at": scheduled},
            headers={"Authorization": f"Bearer {mod}"},
        ).json()
        runners = [_runner(http, unique_handle("ctl")) for _ in range(2)]
        ids = []
        for tok in runners:
            auth = {"Authorization": f"Bearer {tok}"}
            r = http.post(f"/api/v1/races/{race['id']}/register", headers=auth)
            assert r.status_code == 200, r.text
            ids.append(http.get("/api/v1/me", headers=auth).json()["id"])

    async def listen() -> list[dict[str, Any]]:
        """Runner 2 in the room: every numbered event until the race is over."""
        ws, welcome = await _join(ws_base + race["id"], runners[1])
        assert welcome["role"] == "runner"
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            async for raw in ws:
                frame = orjson.loads(raw)
                if frame["type"] in ("event", "countdown"):
                    seen.append(frame)
                if frame.get("event") == "aborted":
                    break
        await ws.close()
        return seen

    listener = Driver(listen)
    listener.start()

    sign_in(page, MODERATOR)
    page.goto(f"/#/race/{race['id']}")
    expect(page.locator("#race-conn")).to_have_text("Live")
    expect(page.locator("#race-conn")).to_have_attribute("data-role", "moderator")
    control = page.locator("#race-control")
    expect(control).to_be_visible()
    expect(page.locator("#ctl-pause")).to_be_disabled()

    page.fill("#ctl-countdown", "3")
    page.click("#ctl-start")
    expect(page.locator("#race-phase")).to_have_text("Countdown")
    expect(page.locator("#ctl-start")).to_be_disabled()
    expect(page.locator("#race-phase")).to_have_text("Live", timeout=8_000)
    expect(page.locator("#ctl-pause")).to_be_enabled()

    page.click("#ctl-pause")
    expect(page.locator("#race-phase")).to_have_text("Paused")
    expect(page.locator("#ctl-resume")).to_be_enabled()
    page.click("#ctl-resume")
    expect(page.locator("#race-phase")).to_have_text("Live")

    # a disqualification needs a runner and a reason, both checked before anything is sent
    page.click("#ctl-dq")
    expect(page.locator("#ctl-out")).to_contain_text("reason")
    page.fill("#ctl-reason", "cut the course")
    page.select_option("#ctl-runner", ids[0])
    page.click("#ctl-dq")
    expect(page.locator("#race-news")).to_contain_text("disqualified: cut the course")
    page.click("#ctl-dq")  # twice: the room's rule refuses it, and the page says why
    expect(page.locator("#ctl-out")).to_contain_text("already_disqualified")
    page.screenshot(path=str(SHOTS / "race-control.png"))

    page.fill("#ctl-reason", "thunderstorm")
    page.click("#ctl-abort")
    expect(page.locator("#race-phase")).to_have_text("Aborted")
    expect(page.locator("#race-news")).to_contain_text("aborted: thunderstorm")

    seen = listener.finish(timeout=30)
    kinds = [f.get("event", f["type"]) for f in seen]
    assert kinds == ["countdown", "paused", "resumed", "disqualified", "aborted"], kinds
    dq = seen[3]
    assert dq["runner_id"] == ids[0] and dq["reason"] == "cut the course"
    assert seen[4]["reason"] == "thunderstorm"
