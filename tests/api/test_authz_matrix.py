"""Authorisation matrix: every route x {anonymous, runner A, runner B, club admin, admin of
another club, moderator, admin} on A's objects. Only the allowed cells get past authorisation.

"Past authorisation" means any answer but 401 or 403, and not the 404 that hides someone else's
object; a 409 or 422 from the domain rules still proves the actor was let in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from game.generate import Profile
from server.app import create_app
from server.config import Settings
from tests.api.helpers import create_user, points, recent_track

ACTORS = ("anon", "runner_a", "runner_b", "club_admin", "other_admin", "moderator", "admin")
AUTHED = frozenset(ACTORS) - {"anon"}
STAFF = frozenset({"moderator", "admin"})
EVERYONE = frozenset(ACTORS)


@dataclass
class World:
    client: TestClient
    headers: dict[str, dict[str, str]]
    ids: dict[str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    db = tmp_path_factory.mktemp("authz") / "authz.db"
    settings = Settings(
        database_url=f"sqlite:///{db}",
        secret_key="m" * 40,
        log_json=False,
        rate_limits_enabled=False,
    )
    create_user(settings, "moderator", "moderator")
    create_user(settings, "admin", "admin")
    for handle in ("runner_a", "runner_b", "club_admin", "other_admin", "victim"):
        create_user(settings, handle, "runner")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        headers: dict[str, dict[str, str]] = {"anon": {}}
        for handle in (*ACTORS[1:], "victim"):
            t = client.post(
                "/api/v1/auth/token", data={"username": handle, "password": "backwards!"}
            )
            headers[handle] = {"Authorization": f"Bearer {t.json()['access_token']}"}
        ids = {
            h: client.get("/api/v1/me", headers=headers[h]).json()["id"]
            for h in headers
            if h != "anon"
        }
        track = recent_track(Profile.MOCK_LOCATION, 5, 600)
        run = client.post(
            "/api/v1/runs", json={"points": points(track)}, headers=headers["runner_a"]
        )
        ids["run"] = run.json()["id"]
        club = client.post(
            "/api/v1/clubs", json={"name": "Matrix Club"}, headers=headers["club_admin"]
        )
        ids["club"] = club.json()["id"]
        client.post(
            "/api/v1/clubs/join",
            json={"code": club.json()["join_code"]},
            headers=headers["runner_a"],
        )
        other = client.post(
            "/api/v1/clubs", json={"name": "Other Club"}, headers=headers["other_admin"]
        )
        ids["other_club"] = other.json()["id"]
        race = {"title": "Members Only", "distance_m": 1000, "scheduled_at": "2031-01-01T09:00:00Z"}
        made = client.post(
            "/api/v1/races",
            json={**race, "club_id": ids["club"], "open": False},
            headers=headers["club_admin"],
        )
        ids["club_race"] = made.json()["id"]
        yield World(client, headers, ids)


RACE = {"title": "Matrix Race", "distance_m": 1000, "scheduled_at": "2031-01-01T09:00:00Z"}
CHALLENGE = {
    "title": "Matrix Challenge",
    "kind": "distance",
    "target_value": 5000,
    "starts_at": "2031-01-01T00:00:00Z",
    "ends_at": "2031-01-08T00:00:00Z",
}

# (name, method, path, body, allowed actors); paths use {run}, {club}, {club_race}, {victim} ...
MATRIX: list[tuple[str, str, str, dict[str, Any] | None, frozenset[str]]] = [
    ("me", "GET", "/api/v1/me", None, AUTHED),
    ("profile", "GET", "/api/v1/me/profile", None, AUTHED),
    ("export", "GET", "/api/v1/me/export", None, AUTHED),
    ("set time zone", "PATCH", "/api/v1/me", {"tz": "Europe/Berlin"}, AUTHED),
    ("my runs", "GET", "/api/v1/me/runs", None, AUTHED),
    ("read A's run", "GET", "/api/v1/runs/{run}", None, frozenset({"runner_a"}) | STAFF),
    ("read A's track", "GET", "/api/v1/runs/{run}/track", None, frozenset({"runner_a"}) | STAFF),
    (
        "A's shared track (club-mates; A shows everyone)",
        "GET",
        "/api/v1/runs/{run}/track?shared=true",
        None,
        frozenset({"runner_a", "club_admin"}) | STAFF,
    ),
    (
        "A's activity list (A shows everyone)",
        "GET",
        "/api/v1/runners/{runner_a}/runs",
        None,
        AUTHED,
    ),
    ("my privacy", "GET", "/api/v1/me/privacy", None, AUTHED),
    (
        "set my privacy",
        "PUT",
        "/api/v1/me/privacy",
        {"activity_visibility": "everyone", "zones": []},
        AUTHED,
    ),
    (
        "appeal A's run",
        "POST",
        "/api/v1/runs/{run}/appeal",
        {"message": "it was me"},
        frozenset({"runner_a"}),
    ),
    (
        "review A's run",
        "POST",
        "/api/v1/runs/{run}/review",
        {"decision": "approve", "reason": "ok!"},
        STAFF,
    ),
    ("review queue", "GET", "/api/v1/moderation/queue", None, STAFF),
    ("audit A's run", "GET", "/api/v1/streams/run-{run}/events", None, STAFF),
    ("ban", "POST", "/api/v1/moderation/runners/{victim}/ban", {"reason": "matrix"}, STAFF),
    ("unban", "POST", "/api/v1/moderation/runners/{victim}/unban", {"reason": "matrix"}, STAFF),
    ("official challenge", "POST", "/api/v1/challenges", CHALLENGE, STAFF),
    (
        "club challenge",
        "POST",
        "/api/v1/challenges",
        {**CHALLENGE, "club_id": "{club}"},
        frozenset({"club_admin"}) | STAFF,
    ),
    ("official race", "POST", "/api/v1/races", RACE, STAFF),
    (
        "club race",
        "POST",
        "/api/v1/races",
        {**RACE, "club_id": "{club}"},
        frozenset({"club_admin"}) | STAFF,
    ),
    ("official drill", "POST", "/api/v1/drills", {"template": "switch-it"}, STAFF),
    (
        "club drill",
        "POST",
        "/api/v1/drills",
        {"template": "switch-it", "club_id": "{club}"},
        frozenset({"club_admin"}) | STAFF,
    ),
    ("read club", "GET", "/api/v1/clubs/{club}", None, AUTHED),
    (
        "club calendar",
        "GET",
        "/api/v1/clubs/{club}/calendar",
        None,
        frozenset({"club_admin", "runner_a"}),
    ),
    (
        "invite to club",
        "POST",
        "/api/v1/clubs/{club}/invites",
        {"handle": "runner_b"},
        frozenset({"club_admin"}),
    ),
    ("my club invitations", "GET", "/api/v1/clubs/invites", None, AUTHED),
    (  # runner_b holds an invitation since the row above (the club admin's invite)
        "decline club invitation",
        "POST",
        "/api/v1/clubs/{club}/invites/decline",
        None,
        frozenset({"runner_b"}),
    ),
    ("rotate join code", "POST", "/api/v1/clubs/{club}/join-code", None, frozenset({"club_admin"})),
    (
        "register members-only race",
        "POST",
        "/api/v1/races/{club_race}/register",
        None,
        frozenset({"club_admin", "runner_a"}),
    ),
    ("leaderboard", "GET", "/api/v1/leaderboards/xp:all", None, EVERYONE),
    ("race", "GET", "/api/v1/races/{club_race}", None, EVERYONE),
    ("drill library", "GET", "/api/v1/drills/templates", None, EVERYONE),
    (
        "set member role",
        "PUT",
        "/api/v1/clubs/{club}/members/{runner_a}/role",
        {"role": "member"},
        frozenset({"club_admin"}),
    ),
    (
        "remove member",
        "DELETE",
        "/api/v1/clubs/{club}/members/{runner_a}",
        None,
        frozenset({"club_admin"}),
    ),
    # last: the race's organisers and moderators run it (cancel ends it for the rows after)
    (
        "edit a club race",
        "PATCH",
        "/api/v1/races/{club_race}",
        {"capacity": 50},
        frozenset({"club_admin"}) | STAFF,
    ),
    (
        "disqualify from a club race",
        "POST",
        "/api/v1/races/{club_race}/disqualify",
        {"runner_id": "{runner_b}", "reason": "not a member"},
        frozenset({"club_admin"}) | STAFF,
    ),
    (
        "call a club race off",
        "POST",
        "/api/v1/races/{club_race}/cancel",
        {"reason": "rained off"},
        frozenset({"club_admin"}) | STAFF,
    ),
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def test_every_route_lets_in_exactly_the_allowed_actors(world: World) -> None:
    failures = []
    for name, method, path, body, allowed in MATRIX:
        url = _fill(path, world.ids)
        for actor in ACTORS:
            r = world.client.request(
                method, url, json=_fill(body, world.ids), headers=world.headers[actor]
            )
            if r.status_code >= 500:
                failures.append(f"{name} as {actor}: {r.status_code} {r.text[:120]}")
                continue
            refused = r.status_code in (401, 403) or (r.status_code == 404 and "{" in path)
            if refused == (actor in allowed):
                failures.append(f"{name} as {actor}: got {r.status_code} ({r.text[:100]})")
            if refused:
                assert r.headers["content-type"].startswith("application/problem+json")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "field", ["owner_id", "status", "score", "role", "runner_id", "created_by"]
)
def test_write_bodies_cannot_set_owner_status_score_or_role(world: World, field: str) -> None:
    writes: list[tuple[str, dict[str, Any]]] = [
        ("/api/v1/auth/register", {"handle": "sneaky1", "password": "backwards!"}),
        ("/api/v1/challenges", CHALLENGE),
        ("/api/v1/races", RACE),
        ("/api/v1/clubs", {"name": "Sneaky Club"}),
        ("/api/v1/drills", {"template": "switch-it"}),
        ("/api/v1/runs", {"points": [{"t": 1.7e9, "lat": 1.0, "lon": 1.0}]}),
    ]
    for path, body in writes:
        r = world.client.post(path, json={**body, field: "x"}, headers=world.headers["moderator"])
        assert r.status_code == 422, (path, field, r.text)
        assert field in r.text
