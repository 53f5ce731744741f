"""Accessibility of the main screens: axe-core (bundled by the `axe-playwright-python` package,
nothing fetched at run time) finds no serious or critical violation (labels, names, contrast,
ARIA) on any of them, for a runner, a moderator and a share-link spotter without an account."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from game.generate import Profile
from tests.api.helpers import points, recent_track
from tests.browser.conftest import MODERATOR, LiveServer
from tests.browser.test_console import sign_in
from tests.browser.test_rooms import _runner, _token
from tests.browser.test_web import sign_up
from tests.conftest import IN_CI

try:
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails in CI) with the reason
    if IN_CI:
        raise
    Axe = expect = None  # type: ignore[assignment,misc]

SERIOUS = {"serious", "critical"}


@pytest.fixture
def audit(page: Any, live_server: LiveServer) -> Callable[[str, str], None]:
    """audit(name, ready selector): run axe on the screen once `ready` is visible."""
    if Axe is None:  # pragma: no cover - the browser fixture has skipped already
        pytest.skip("axe-playwright-python is not installed")
    axe = Axe()
    outside: list[str] = []
    page.on(
        "request",
        lambda r: (
            outside.append(r.url)
            if not r.url.startswith((live_server.url, "ws://127.0.0.1", "data:", "blob:"))
            else None
        ),
    )
    found: dict[str, list[str]] = {}

    def run(name: str, ready: str) -> None:
        expect(page.locator(ready).first).to_be_visible()
        page.wait_for_load_state("networkidle")
        results = axe.run(page)
        assert results.response["testEngine"]["name"] == "axe-core"
        bad = [v for v in results.response["violations"] if v["impact"] in SERIOUS]
        if bad:
            found[name] = [
                f"{v['id']} ({v['impact']}): {', '.join(str(n['target']) for n in v['nodes'])}"
                for v in bad
            ]
        assert not outside, f"requests left the test server: {outside}"

    run.found = found  # type: ignore[attr-defined]
    return run


def _report(found: dict[str, list[str]]) -> str:
    return "\n".join(f"{screen}: {line}" for screen, lines in found.items() for line in lines)


def test_the_runner_screens_have_no_serious_accessibility_violations(
    page: Any,
    audit: Callable[[str, str], None],
    live_server: LiveServer,
    unique_handle: Callable[[str], str],
) -> None:
    page.goto("/#/signin")
    audit("sign in", "#handle")
    page.goto("/#/signup")
    audit("sign up", "#handle")
    handle = unique_handle("a11y")
    sign_up(page, handle)
    audit("home", ".card.hero h1")
    page.goto("/#/record")
    audit("record: checklist", "#start")
    page.goto("/#/runs")
    audit("runs", "h1")
    page.goto("/#/boards")
    audit("boards", "#find-me")
    page.goto("/#/more")
    audit("more", "#sign-out")
    page.goto("/#/race")
    audit("races", "h1")
    page.goto("/#/drill")
    audit("drill", "#drill-id")
    page.goto("/#/spotters")
    audit("spotters", "#invite-spotter")
    page.fill("#link-label", "Friend")
    page.get_by_role("button", name="Create a share link").click()
    audit("spotters: link created", "#link-url")
    url = page.locator("#link-url").input_value()
    page.goto("/#/clubs")
    audit("clubs", "#create-club")
    page.fill("#club-name", f"A11y Club {handle}")
    page.get_by_role("button", name="Create club").click()
    audit("club", "#club-calendar")

    tok = page.evaluate("localStorage.getItem('retrorun.token')")
    with httpx.Client(base_url=live_server.url) as http:
        mod = _token(http, MODERATOR)
        race = http.post(
            "/api/v1/races",
            json={
                "title": "Accessible Reverse 400",
                "distance_m": 400,
                "scheduled_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            },
            headers={"Authorization": f"Bearer {mod}"},
        ).json()
        r = http.post(
            f"/api/v1/races/{race['id']}/register", headers={"Authorization": f"Bearer {tok}"}
        )
        assert r.status_code == 200, r.text
    page.goto(f"/#/race/{race['id']}")
    audit("race room: runner", "#alerts-card")

    # a spotter without an account, through the share link
    page.evaluate("localStorage.clear()")
    page.goto(url)
    audit("share link", "#watch-races")
    page.locator("#watch-races a").first.click()
    audit("share link: live room", "#spotting-card")

    found = audit.found  # type: ignore[attr-defined]
    assert not found, "serious accessibility violations:\n" + _report(found)


def test_the_moderator_screens_have_no_serious_accessibility_violations(
    page: Any,
    audit: Callable[[str, str], None],
    live_server: LiveServer,
    unique_handle: Callable[[str], str],
) -> None:
    with httpx.Client(base_url=live_server.url) as http:
        tok = _runner(http, unique_handle("a11yflag"))
        body = {"points": points(recent_track(Profile.MOCK_LOCATION, seed=4, distance_m=300))}
        run = http.post(
            "/api/v1/runs", json=body, headers={"Authorization": f"Bearer {tok}"}
        ).json()
        assert run["status"] == "review"
        mod = _token(http, MODERATOR)
        race = http.post(
            "/api/v1/races",
            json={
                "title": "Moderated Reverse 400",
                "distance_m": 400,
                "scheduled_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            },
            headers={"Authorization": f"Bearer {mod}"},
        ).json()
    sign_in(page, MODERATOR)
    page.goto("/#/mod")
    audit("review queue", "#queue")
    page.goto(f"/#/mod/{run['id']}")
    audit("review run", "#track-plot")
    page.locator("#crop-tools summary").click()
    audit("review run: crop", "#crop-first")
    page.goto(f"/#/race/{race['id']}")
    audit("race control", "#race-control")

    found = audit.found  # type: ignore[attr-defined]
    assert not found, "serious accessibility violations:\n" + _report(found)


def test_the_checker_itself_reports_a_missing_label_and_low_contrast(context: Any) -> None:
    """So a clean report above means clean screens, not a checker that ran nothing."""
    if Axe is None:  # pragma: no cover - the browser fixture has skipped already
        pytest.skip("axe-playwright-python is not installed")
    page = context.new_page()
    page.set_content(
        "<html lang='en'><head><title>t</title></head><body><main><h1>t</h1>"
        "<input type='text'><p style='color:#777;background:#888'>grey on grey</p>"
        "</main></body></html>"
    )
    found = {v["id"]: v["impact"] for v in Axe().run(page).response["violations"]}
    assert found.get("label") == "critical" and found.get("color-contrast") == "serious", found
