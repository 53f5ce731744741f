"""Clubs in the phone client: one runner creates a club and schedules a club race, a second
runner joins with the code, both see the race on the club calendar (and in its iCalendar feed),
the member list and the club leaderboard; the owner makes the newcomer an admin, then invites a
third runner, who accepts from the Invitations list on their Clubs screen."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.browser.conftest import PHONE, LiveServer
from tests.browser.test_rooms import SHOTS
from tests.browser.test_web import sign_up
from tests.conftest import IN_CI

try:
    from playwright.sync_api import expect
except ImportError:  # the `browser` fixture skips (or fails in CI) with the reason
    if IN_CI:
        raise
    expect = None  # type: ignore[assignment]


def test_a_club_is_created_joined_by_code_and_its_calendar_shows_a_club_race(
    page: Any, browser: Any, live_server: LiveServer, unique_handle: Callable[[str], str]
) -> None:
    owner, member = unique_handle("owner"), unique_handle("member")
    club_name = f"Reverse Rovers {owner}"
    race_title = f"Club Reverse 400 {owner}"
    start = (datetime.now(UTC) + timedelta(days=2)).replace(
        hour=9, minute=30, second=0, microsecond=0
    )

    sign_up(page, owner)
    page.locator("#tabs").get_by_role("link", name="More").click()
    page.click("#to-clubs")
    expect(page.locator("#no-clubs")).to_be_visible()
    page.fill("#club-name", club_name)
    page.get_by_role("button", name="Create club").click()
    expect(page.locator("#club-title")).to_have_text(club_name)
    expect(page.locator("#club-role")).to_contain_text("the owner")
    code = page.inner_text("#join-code")
    assert len(code) >= 4
    expect(page.locator("#calendar-empty")).to_be_visible()

    # the owner schedules a club race (the page's time zone is UTC)
    page.fill("#race-title-in", race_title)
    page.fill("#race-distance", "400")
    page.fill("#race-at", start.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Schedule race").click()
    race_item = page.locator("#calendar li[data-kind='race']", has_text=race_title)
    expect(race_item).to_have_count(1)
    expect(race_item).to_contain_text("09:30")
    feed = page.locator("#ics-url").input_value()

    # a second runner, on their own phone, joins with the code
    other = browser.new_context(
        base_url=live_server.url,
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="en-GB",
        timezone_id="UTC",
    )
    try:
        phone = other.new_page()
        sign_up(phone, member)
        phone.locator("#tabs").get_by_role("link", name="More").click()
        phone.click("#to-clubs")
        phone.fill("#club-code", "nope-nope")
        phone.get_by_role("button", name="Join", exact=True).click()
        expect(phone.locator("#club-errors .error")).to_contain_text("join code")
        phone.fill("#club-code", code)
        phone.get_by_role("button", name="Join", exact=True).click()
        expect(phone.locator("#club-title")).to_have_text(club_name)
        expect(phone.locator("#club-role")).to_contain_text("a member · 2 members")
        expect(phone.locator("#join-code")).to_have_count(0)  # admins only
        expect(phone.locator("#calendar li[data-kind='race']")).to_contain_text(race_title)
        members = phone.locator("#members li")
        expect(members).to_have_count(2)
        expect(phone.locator("#members li[data-role='owner']")).to_contain_text(owner)
        expect(phone.locator("#members li[data-role='member']")).to_contain_text(f"{member} (you)")
        expect(phone.locator("#club-board tbody tr")).to_have_count(2)
        phone.screenshot(path=str(SHOTS / "club.png"))
        phone.goto("/#/clubs")
        expect(phone.locator("#my-clubs li")).to_contain_text(club_name)
        phone.screenshot(path=str(SHOTS / "clubs.png"))
    finally:
        other.close()

    # the feed phones subscribe to carries the race
    with httpx.Client() as http:
        ics = http.get(feed)
    assert ics.status_code == 200 and ics.headers["content-type"].startswith("text/calendar")
    assert f"SUMMARY:Race: {race_title}" in ics.text
    assert f"DTSTART:{start.strftime('%Y%m%dT%H%M%SZ')}" in ics.text

    # the owner sees the newcomer and makes them an admin
    page.reload()
    newcomer = page.locator("#members li[data-role='member']")
    expect(newcomer).to_contain_text(member)
    newcomer.get_by_role("button", name=f"Make {member} an admin").click()
    expect(page.locator("#members li[data-role='admin']")).to_contain_text(member)

    # a third runner is invited by handle and accepts from the Invitations list
    guest = unique_handle("guest")
    third = browser.new_context(
        base_url=live_server.url,
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="en-GB",
        timezone_id="UTC",
    )
    try:
        phone = third.new_page()
        sign_up(phone, guest)
        page.fill("#invite-handle", guest)
        page.get_by_role("button", name="Invite", exact=True).click()
        expect(page.locator("#club-errors .ok")).to_contain_text("Invitation sent")

        phone.locator("#tabs").get_by_role("link", name="More").click()
        phone.click("#to-clubs")
        invitation = phone.locator("#invites li")
        expect(invitation).to_have_count(1)
        expect(invitation).to_contain_text(club_name)
        expect(invitation).to_contain_text(f"Invited by {owner}")
        invitation.get_by_role("button", name=f"Accept the invitation to {club_name}").click()
        expect(phone.locator("#club-title")).to_have_text(club_name)
        expect(phone.locator("#club-role")).to_contain_text("a member · 3 members")
        phone.goto("/#/clubs")
        expect(phone.locator("#my-clubs li")).to_contain_text(club_name)
        expect(phone.locator("#club-invites")).to_have_count(0)
    finally:
        third.close()
