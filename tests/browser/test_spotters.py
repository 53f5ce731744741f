"""Spotters in the phone client: a paired spotter accepts, follows a live race, gets a fall alert
and acknowledges it; a share link is created, followed without an account, and revoked.

Python plays the runner and the moderator with `websockets`; the page is the spotter.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from game.generate import Profile, generate
from game.safety import FallDetector
from game.track import EARTH_RADIUS_M, Fix
from tests.browser.conftest import MODERATOR, LiveServer
from tests.browser.test_rooms import SHOTS, Driver, _gps, _join, _runner, _token, _until
from tests.browser.test_web import sign_up
from tests.conftest import IN_CI

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails in CI) with the reason
    if IN_CI:
        raise
    expect = None  # type: ignore[assignment]

#: Running time after the gun before the sudden stop (s), and how long the runner stays down.
RUN_S = 8.0
STOPPED_S = 9
M_PER_DEG = EARTH_RADIUS_M * math.pi / 180.0


def _race(http: httpx.Client, title: str, runner_token: str) -> dict[str, Any]:
    mod = _token(http, MODERATOR)
    scheduled = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    race: dict[str, Any] = http.post(
        "/api/v1/races",
        json={"title": title, "distance_m": 1000, "scheduled_at": scheduled},
        headers={"Authorization": f"Bearer {mod}"},
    ).json()
    r = http.post(
        f"/api/v1/races/{race['id']}/register",
        headers={"Authorization": f"Bearer {runner_token}"},
    )
    assert r.status_code == 200, r.text
    return race


def _fall_frames(gun: float) -> list[dict[str, Any]]:
    """An honest backward run for RUN_S after the gun, then a sudden stop at one spot."""
    probe = generate(Profile.HONEST_RECREATIONAL, 21, 0.0, 300.0)
    t = probe.t - probe.t[0] + gun + 0.2
    n = int((t <= gun + RUN_S).sum())
    moving = []
    for i in range(n):
        frame = _gps(probe, i)
        frame["t"] = float(t[i])
        moving.append(frame)
    last = moving[-1]
    stop = [
        {
            "type": "gps",
            "seq": n + 1 + k,
            "t": last["t"] + 1.0 + k,
            "lat": last["lat"] + 0.3 * math.sin(k) / M_PER_DEG,
            "lon": last["lon"],
            "acc": 4.0,
            "speed": 0.05 * (k % 2),
        }
        for k in range(STOPPED_S)
    ]
    return moving + stop


@pytest.mark.slow  # a real-time race with a fall (~40 s); tests/rooms/test_spotters.py in CI
def test_a_spotter_accepts_follows_a_race_and_acknowledges_a_fall_alert(
    page: Any, live_server: LiveServer, unique_handle: Callable[[str], str]
) -> None:
    ws_base = live_server.url.replace("http://", "ws://") + "/ws/rooms/"
    runner, spotter = unique_handle("faller"), unique_handle("spotter")
    sign_up(page, spotter)
    with httpx.Client(base_url=live_server.url) as http:
        tok = _runner(http, runner)
        auth = {"Authorization": f"Bearer {tok}"}
        runner_id = http.get("/api/v1/me", headers=auth).json()["id"]
        r = http.post("/api/v1/spotters/invites", json={"handle": spotter}, headers=auth)
        assert r.status_code == 201, r.text
        race = _race(http, "Spotted Reverse 1k", tok)
        mod = _token(http, MODERATOR)

    # the invitation names the runner; accepting shows their race to follow
    page.locator("#tabs").get_by_role("link", name="More").click()
    page.click("#to-spotters")
    invitation = page.locator(f"#spotting li[data-runner='{runner_id}']")
    expect(invitation).to_contain_text(runner)
    expect(invitation).to_contain_text("invited")
    invitation.get_by_role("button", name=f"Accept to spot {runner}").click()
    invitation = page.locator(f"#spotting li[data-runner='{runner_id}']")
    expect(invitation).to_contain_text("accepted")
    page.screenshot(path=str(SHOTS / "spotters.png"))
    invitation.get_by_role("link", name=re.compile("Follow")).click()

    expect(page.locator("#race-conn")).to_have_text("Live")
    expect(page.locator("#race-conn")).to_have_attribute("data-role", "spotter")
    expect(page.locator("#spotting-card")).to_contain_text(runner)
    expect(page.locator("#alerts-none")).to_be_visible()
    spotter_id = page.evaluate("JSON.parse(localStorage.getItem('retrorun.me')).id")

    async def scenario() -> dict[str, Any]:
        moderator, welcome = await _join(ws_base + race["id"], mod)
        assert welcome["control"] is True
        await moderator.send(
            orjson.dumps({"type": "control", "action": "start", "countdown_s": 3}).decode()
        )
        gun = (await _until(moderator, lambda f: f["type"] == "countdown", 10))["start_at"]
        frames = _fall_frames(gun)
        # the pure detector on the same fixes: nothing while running, a fall once stopped
        detector = FallDetector()
        fix = [
            Fix(f["t"], f["lat"], f["lon"], acc_m=f.get("acc"), speed_mps=f.get("speed"))
            for f in frames
        ]
        signals = [i for i, f in enumerate(fix) for _ in detector.add(f)]
        assert signals and frames[signals[0]]["speed"] < 0.3, signals

        ws, hello = await _join(ws_base + race["id"], tok)
        assert hello["role"] == "runner"
        for frame in frames:
            await asyncio.sleep(max(0.0, frame["t"] - time.time()))
            await ws.send(orjson.dumps(frame).decode())
        alert = await _until(ws, lambda f: f["type"] == "alert", 15)
        acked = await _until(ws, lambda f: f["type"] == "alert_acked", 30)
        await moderator.send(
            orjson.dumps({"type": "control", "action": "abort", "reason": "test over"}).decode()
        )
        await ws.close()
        await moderator.close()
        return {"alert": alert, "acked": acked}

    driver = Driver(scenario)
    driver.start()
    expect(page.locator("#race-phase")).to_have_text("Live", timeout=10_000)
    alert = page.locator("li.alert[data-kind='fall']")
    expect(alert).to_be_visible(timeout=RUN_S * 1000 + STOPPED_S * 1000 + 10_000)
    expect(alert).to_contain_text(f"Possible fall: {runner}")
    expect(alert).to_have_attribute("role", "alert")
    expect(alert).to_contain_text("Last position")
    expect(page.locator("#spotting-card canvas")).to_be_visible()
    page.screenshot(path=str(SHOTS / "spotter-alert.png"))
    alert.get_by_role("button", name=f"Acknowledge the alert for {runner}").click()
    expect(alert.locator(".alert-outcome")).to_contain_text("Acknowledged by you (spotter)")
    expect(alert).to_have_attribute("data-outcome", "acked")

    result = driver.finish(timeout=60)
    assert result["alert"]["kind"] == "fall" and result["alert"]["runner_id"] == runner_id
    assert result["acked"]["id"] == result["alert"]["id"]
    assert result["acked"]["by"] == spotter_id and result["acked"]["role"] == "spotter"


def test_a_share_link_is_followed_without_an_account_and_stops_working_once_revoked(
    page: Any, browser: Any, live_server: LiveServer, unique_handle: Callable[[str], str]
) -> None:
    runner = unique_handle("linker")
    sign_up(page, runner)
    tok = page.evaluate("localStorage.getItem('retrorun.token')")
    with httpx.Client(base_url=live_server.url) as http:
        _race(http, "Linked Reverse 1k", tok)

    page.goto("/#/spotters")
    page.fill("#link-label", "Mum")
    page.get_by_role("button", name="Create a share link").click()
    url = page.locator("#link-url").input_value()
    assert re.fullmatch(rf"{re.escape(live_server.url)}/#/watch/[A-Za-z0-9_-]{{16,}}", url), url
    link = page.locator("#links li", has_text="Mum")
    expect(link).to_contain_text("active")

    # someone without an account opens the link: the runner's race, then its room as a spotter
    guest_ctx = browser.new_context(
        base_url=live_server.url, viewport={"width": 390, "height": 844}
    )
    try:
        guest = guest_ctx.new_page()
        guest.goto(url)
        expect(guest.get_by_role("heading", name=f"Spotting {runner}")).to_be_visible()
        guest.get_by_role("link", name=f"Follow {runner} in Linked Reverse 1k").click()
        expect(guest.locator("#race-conn")).to_have_text("Live")
        expect(guest.locator("#race-conn")).to_have_attribute("data-role", "spotter")
        expect(guest.locator("#spotting-card")).to_contain_text(runner)
        expect(guest.locator("#tabs")).to_be_hidden()

        link.get_by_role("button", name="Revoke Mum").click()
        expect(page.locator("#links li", has_text="Mum")).to_contain_text("revoked")
        # the following socket is closed for good, and the link itself is dead
        expect(guest.locator("#race-conn")).to_have_text("This share link was revoked")
        guest.goto(url)
        guest.reload()
        expect(guest.locator(".error")).to_contain_text("revoked or has expired")
    finally:
        guest_ctx.close()
