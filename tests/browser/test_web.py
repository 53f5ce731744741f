"""The phone client end to end, in Chromium at phone size, against a real server.

Fixes reach the recording screen two ways: through the browser's geolocation (Playwright's
`set_geolocation` drives `watchPosition`; timestamps are wall-clock) and through the page's
test hook `window.__retrorunFeed(fix)`, which takes the same path as the GPS callback, so a
generated backward run of several minutes can be fed in a second with its own timestamps.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from game.generate import Profile
from tests.api.helpers import points, recent_track
from tests.browser.conftest import MODERATOR, START, LiveServer
from tests.conftest import IN_CI

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails in CI) with the reason
    if IN_CI:
        raise
    expect = None

SCREENSHOT = "/tmp/retrorun-home.png"
#: Feed wire fixes one by one through the page's test hook, each written before the next.
FEED_ALL = "async (fixes) => { for (const f of fixes) await window.__retrorunFeed(f); }"


def sign_up(page: Any, handle: str, password: str = "backwards!") -> None:
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_role("link", name=re.compile("Create an account")).click()
    page.fill("#handle", handle)
    page.fill("#password", password)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".card.hero h1")).to_contain_text("week")


def tick_checklist_and_start(page: Any) -> None:
    page.locator("#tabs").get_by_role("link", name="Record").click()
    expect(page.get_by_role("heading", name="Record a backward run")).to_be_visible()
    for item in ("flat_clear_surface", "spotter_present", "route_walked_first"):
        page.check(f"#check-{item}")
    page.click("#start")
    expect(page.get_by_role("heading", name="Recording")).to_be_visible()


def fixes_shown(page: Any) -> int:
    return int(page.inner_text("#live-fixes"))


def stop_and_upload(page: Any) -> None:
    page.click("#stop")
    page.click("#finish")


def test_the_client_is_served_at_the_root_with_security_headers(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url) as http:
        root = http.get("/")
        assert root.status_code == 200
        assert root.headers["content-type"].startswith("text/html")
        csp = root.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert root.headers["x-content-type-options"] == "nosniff"
        assert root.headers["referrer-policy"] == "no-referrer"
        manifest = http.get("/manifest.webmanifest")
        assert manifest.headers["content-type"].startswith("application/manifest+json")
        assert manifest.json()["orientation"] == "portrait"
        assert http.get("/sw.js").headers["content-type"].startswith("text/javascript")
        # The API and the docs are untouched by the mount at /.
        missing = http.get("/api/v1/nope")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert http.get("/healthz").status_code == 200
        assert http.get("/docs").status_code == 200
        assert "content-security-policy" not in http.get("/healthz").headers


def test_sign_up_join_record_a_verified_run_and_rank_on_the_weekly_board(
    page: Any, context: Any, unique_handle: Callable[[str], str]
) -> None:
    handle = unique_handle("retro")
    # The run's fixes come from the test hook (minutes of running with their own timestamps),
    # so the browser's GPS is switched off: a wall-clock fix would land in the middle.
    context.clear_permissions()
    sign_up(page, handle)

    page.click("#join")
    expect(page.locator("#progress-rank")).to_be_visible()
    expect(page.locator("#join")).to_have_count(0)

    tick_checklist_and_start(page)
    expect(page.locator("#view .error")).to_contain_text("GPS")  # denied: said, not hidden
    track = points(recent_track(Profile.HONEST_RECREATIONAL, seed=3, distance_m=800))
    page.evaluate(FEED_ALL, track)
    expect(page.locator("#live-fixes")).to_have_text(str(len(track)))
    assert page.inner_text("#live-distance").endswith("m")
    page.screenshot(path="/tmp/retrorun-record.png")
    stop_and_upload(page)

    expect(page.locator("#verdict-title")).to_have_text("Run verified", timeout=20_000)
    expect(page.locator(".status.verified")).to_be_visible()
    assert re.fullmatch(r"\d{3} m", page.inner_text("#verdict-distance"))  # ~800 m
    expect(page.locator("#verdict-flags")).not_to_be_empty()
    page.screenshot(path="/tmp/retrorun-verdict.png")

    page.click("#to-boards")
    expect(page.locator("#board-name")).to_contain_text("weekly:")
    me_row = page.locator("table.board tr.me")
    expect(me_row).to_contain_text(handle)
    expect(me_row.locator("td").first).to_have_text("1")
    page.click("#find-me")
    expect(page.locator("table.board tr.me")).to_contain_text(handle)
    page.screenshot(path="/tmp/retrorun-board.png")

    page.locator("#tabs").get_by_role("link", name="Runs").click()
    expect(page.locator("#runs .status.verified")).to_have_count(1)

    page.locator("#tabs").get_by_role("link", name="Home").click()
    expect(page.locator("#progress-rank")).to_contain_text("#1")
    page.screenshot(path=SCREENSHOT)


def test_a_reload_mid_run_keeps_the_buffered_fixes_and_an_offline_stop_uploads_later(
    page: Any, context: Any, unique_handle: Callable[[str], str]
) -> None:
    sign_up(page, unique_handle("reload"))
    tick_checklist_and_start(page)

    for i in range(1, 6):
        context.set_geolocation({**START, "latitude": START["latitude"] - i * 2.25e-5})
        page.wait_for_function(
            "n => Number(document.querySelector('#live-fixes')?.textContent) >= n", arg=i
        )
        page.wait_for_timeout(120)
    before = fixes_shown(page)
    assert before >= 5

    page.reload()
    expect(page.locator("#resumed")).to_contain_text(f"{before} GPS fixes were kept")
    assert fixes_shown(page) >= before
    for i in range(6, 9):
        context.set_geolocation({**START, "latitude": START["latitude"] - i * 2.25e-5})
        page.wait_for_function(
            "n => Number(document.querySelector('#live-fixes')?.textContent) >= n",
            arg=before + i - 5,
        )
        page.wait_for_timeout(120)
    total = fixes_shown(page)

    context.set_offline(True)
    stop_and_upload(page)
    expect(page.locator("#upload-waiting")).to_contain_text("saved on this phone")
    expect(page.locator("#net")).to_contain_text("1 run to upload")
    context.set_offline(False)  # the `online` event retries at once
    expect(page.locator("#verdict-title")).to_be_visible(timeout=20_000)

    token = page.evaluate("localStorage.getItem('retrorun.token')")
    runs = page.request.get("/api/v1/me/runs", headers={"Authorization": f"Bearer {token}"}).json()
    assert len(runs) == 1
    assert runs[0]["fix_count"] == total  # nothing lost across the reload or the outage


def test_a_moderator_reviews_a_flagged_run_in_the_console(
    page: Any, live_server: LiveServer, unique_handle: Callable[[str], str]
) -> None:
    runner, moderator = unique_handle("mocky"), MODERATOR
    with httpx.Client(base_url=live_server.url) as http:
        http.post("/api/v1/auth/register", json={"handle": runner, "password": "backwards!"})
        tok = http.post(
            "/api/v1/auth/token", data={"username": runner, "password": "backwards!"}
        ).json()["access_token"]
        body = {"points": points(recent_track(Profile.MOCK_LOCATION, seed=2))}
        run = http.post(
            "/api/v1/runs", json=body, headers={"Authorization": f"Bearer {tok}"}
        ).json()
    assert run["status"] == "review"

    page.goto("/#/signin")
    page.fill("#handle", moderator)
    page.fill("#password", "backwards!")
    page.get_by_role("button", name="Sign in").click()
    page.locator("#tabs").get_by_role("link", name="More").click()
    page.click("#to-mod")
    page.locator(f"a[href='#/mod/{run['id']}']").click()
    expect(page.locator("#review-flags")).to_contain_text("mock_location")

    page.click("#approve")  # no reason yet: the API's problem detail is shown
    expect(page.locator(".error")).to_contain_text("reason")
    page.fill("#reason", "spotter confirmed the run")
    page.click("#approve")
    expect(page.locator(f"a[href='#/mod/{run['id']}']")).to_have_count(0)

    page.locator("#tabs").get_by_role("link", name="More").click()
    page.click("#sign-out")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("localStorage.getItem('retrorun.token')") is None


def test_the_shell_opens_offline_so_a_run_can_start_without_network(
    page: Any, context: Any, unique_handle: Callable[[str], str]
) -> None:
    sign_up(page, unique_handle("offline"))
    assert page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    context.set_offline(True)
    page.reload()
    expect(page.locator("#net")).to_contain_text("Offline")
    page.locator("#tabs").get_by_role("link", name="Record").click()
    expect(page.locator("#start")).to_be_visible()
    context.set_offline(False)
