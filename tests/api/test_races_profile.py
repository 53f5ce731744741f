"""Races over REST (the live part is tested in tests/rooms) and the runner profile."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from game.generate import Profile
from server.config import Settings
from tests.api.conftest import assert_problem
from tests.api.helpers import create_user, points, recent_track

Headers = dict[str, str]
RACE = {"title": "Saturday Reverse 5k", "distance_m": 5000, "scheduled_at": "2030-01-05T09:00:00Z"}


def _login(client: TestClient, handle: str) -> Headers:
    t = client.post("/api/v1/auth/token", data={"username": handle, "password": "backwards!"})
    return {"Authorization": f"Bearer {t.json()['access_token']}"}


def test_a_moderator_schedules_a_race_and_runners_register(
    client: TestClient, settings: Settings, sign_up: Callable[..., Headers]
) -> None:
    create_user(settings, "organiser", "moderator")
    mod = _login(client, "organiser")
    runner = sign_up("racer")
    assert_problem(client.post("/api/v1/races", json=RACE, headers=runner), 403, "forbidden")

    race = client.post("/api/v1/races", json={**RACE, "capacity": 1}, headers=mod).json()
    assert race["status"] == "scheduled" and race["room"] == f"/ws/rooms/{race['id']}"
    me = client.get("/api/v1/me", headers=runner).json()
    joined = client.post(f"/api/v1/races/{race['id']}/register", headers=runner).json()
    assert joined["registered"] == [me["id"]]
    again = client.post(f"/api/v1/races/{race['id']}/register", headers=runner)
    assert_problem(again, 409, "already_registered")
    other = sign_up("late")
    assert_problem(
        client.post(f"/api/v1/races/{race['id']}/register", headers=other), 409, "race_full"
    )
    assert [r["id"] for r in client.get("/api/v1/races").json()] == [race["id"]]
    results = client.get(f"/api/v1/races/{race['id']}/results").json()
    assert results["status"] == "scheduled"
    assert results["results"] == [
        {"place": None, "runner_id": me["id"], "time_s": None, "distance_m": None, "status": "dnf"}
    ]
    assert_problem(client.get("/api/v1/races/nope"), 404, "not_found")


def test_bad_race_bodies_are_problems(client: TestClient, settings: Settings) -> None:
    create_user(settings, "org2", "moderator")
    mod = _login(client, "org2")
    for bad in (
        {**RACE, "distance_m": 10},
        {**RACE, "scheduled_at": "2030-01-05T09:00:00"},  # no time zone
        {**RACE, "capacity": 0},
        {**RACE, "owner": "me"},
    ):
        assert_problem(client.post("/api/v1/races", json=bad, headers=mod), 422, "invalid")


def test_the_profile_counts_credited_runs_with_badges(
    client: TestClient, sign_up: Callable[..., Headers]
) -> None:
    me = sign_up("badger")
    empty = client.get("/api/v1/me/profile", headers=me).json()
    assert (empty["xp"], empty["level"], empty["badges"]) == (0, 1, [])
    track = recent_track(Profile.HONEST_RECREATIONAL, seed=11, distance_m=1300)
    run = client.post("/api/v1/runs", json={"points": points(track)}, headers=me).json()
    assert run["status"] == "verified"
    profile = client.get("/api/v1/me/profile", headers=me).json()
    assert profile["xp"] > 0 and profile["total_runs"] == 1
    assert "first_backward_km" in {b["code"] for b in profile["badges"]}
    assert profile["day_streak"] == 1 and profile["week_streak"] == 1
    xp_board = client.get("/api/v1/leaderboards/xp:all").json()
    assert xp_board["entries"][0]["score"] == profile["xp"]

    assert client.patch("/api/v1/me", json={"tz": "Europe/Berlin"}, headers=me).json() == {
        "tz": "Europe/Berlin"
    }
    assert client.get("/api/v1/me/profile", headers=me).json()["tz"] == "Europe/Berlin"
    assert_problem(client.patch("/api/v1/me", json={"tz": "Mars/Olympus"}, headers=me), 422)


def test_a_race_on_a_course_line_with_a_cutoff(client: TestClient, settings: Settings) -> None:
    create_user(settings, "org3", "moderator")
    mod = _login(client, "org3")
    line = [[52.0, 13.0], [52.0 + 600 / 111_195.0, 13.0]]  # 600 m north
    body = {**RACE, "distance_m": 500, "course": {"line": line, "tolerance_m": 15}}
    race = client.post("/api/v1/races", json={**body, "cutoff_s": 1800}, headers=mod).json()
    assert race["course"]["tolerance_m"] == 15.0 and race["cutoff_s"] == 1800.0
    assert abs(race["course"]["length_m"] - 600.0) < 1.0
    assert client.get(f"/api/v1/races/{race['id']}").json()["course"] == race["course"]
    free = client.post("/api/v1/races", json=RACE, headers=mod).json()
    assert free["course"] is None and free["cutoff_s"] == 3600.0 + 1.2 * 5000
    assert free["auto_start"] is False and race["auto_start"] is False
    auto = client.post("/api/v1/races", json={**RACE, "auto_start": True}, headers=mod).json()
    assert client.get(f"/api/v1/races/{auto['id']}").json()["auto_start"] is True
    for bad, code in (
        ({**body, "distance_m": 800}, "bad_course"),  # the line is shorter than the race
        ({**body, "course": {"line": [[52.0, 13.0], [95.0, 13.0]]}}, "bad_course"),
        ({**body, "course": {"line": line, "tolerance_m": 1}}, "invalid"),
        ({**body, "course": {"line": line[:1]}}, "invalid"),
        ({**body, "cutoff_s": 10}, "invalid"),
        ({**RACE, "scheduled_at": "2020-01-05T09:00:00Z"}, "in_the_past"),
    ):
        assert_problem(client.post("/api/v1/races", json=bad, headers=mod), 422, code)


def test_an_organiser_edits_a_race_before_its_countdown(
    client: TestClient, settings: Settings, sign_up: Callable[..., Headers]
) -> None:
    create_user(settings, "org4", "moderator")
    mod = _login(client, "org4")
    ann, bob = sign_up("edit_a"), sign_up("edit_b")
    race = client.post("/api/v1/races", json={**RACE, "capacity": 5}, headers=mod).json()
    url = f"/api/v1/races/{race['id']}"
    for who in (ann, bob):
        assert client.post(f"{url}/register", headers=who).status_code == 200
    change = {"title": "Sunday Reverse 5k", "scheduled_at": "2030-01-06T10:00:00+01:00"}
    assert_problem(client.patch(url, json=change, headers=ann), 403, "forbidden")
    edited = client.patch(url, json={**change, "capacity": 2, "auto_start": True}, headers=mod)
    assert edited.status_code == 200, edited.text
    body = edited.json()
    assert (body["title"], body["capacity"], body["auto_start"]) == ("Sunday Reverse 5k", 2, True)
    assert body["scheduled_at"].startswith("2030-01-06T09:00:00")  # UTC
    assert len(body["registered"]) == 2  # the runners stay registered
    listed = next(r for r in client.get("/api/v1/races").json() if r["id"] == race["id"])
    assert listed["title"] == "Sunday Reverse 5k"
    assert_problem(client.patch(url, json={"capacity": 1}, headers=mod), 409)
    assert_problem(client.patch(url, json={"distance_m": 100}, headers=mod), 422, "invalid")
    past = {"scheduled_at": "2020-01-01T09:00:00Z"}
    assert_problem(client.patch(url, json=past, headers=mod), 422, "in_the_past")
    events = client.get(f"/api/v1/streams/race-{race['id']}/events", headers=mod).json()
    assert [e["type"] for e in events].count("RaceEdited") == 1
