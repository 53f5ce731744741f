"""Privacy: activity visibility x viewer, privacy zones in shared track views, validation,
and account deletion removing the zones."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from game.generate import Profile
from server.config import Settings
from server.store.db import create_engine
from tests.api.conftest import assert_problem
from tests.api.helpers import create_user, points, recent_track
from tests.conftest import in_thread

Headers = dict[str, str]
VIEWERS = ("owner", "clubmate", "stranger", "moderator")


@dataclass
class Cast:
    headers: dict[str, Headers]
    owner_id: str
    run_id: str
    fix_count: int


@pytest.fixture
def cast(client: TestClient, settings: Settings, sign_up: Callable[..., Headers]) -> Cast:
    headers = {"owner": sign_up("privy_pat"), "clubmate": sign_up("mate_max")}
    headers["stranger"] = sign_up("stranger_sue")
    create_user(settings, "mod_mo", "moderator")
    t = client.post("/api/v1/auth/token", data={"username": "mod_mo", "password": "backwards!"})
    headers["moderator"] = {"Authorization": f"Bearer {t.json()['access_token']}"}
    club = client.post("/api/v1/clubs", json={"name": "Privy Club"}, headers=headers["owner"])
    joined = client.post(
        "/api/v1/clubs/join", json={"code": club.json()["join_code"]}, headers=headers["clubmate"]
    )
    assert joined.status_code == 200, joined.text
    other = client.post("/api/v1/clubs", json={"name": "Other Club"}, headers=headers["stranger"])
    assert other.status_code == 201
    body = {"points": points(recent_track(Profile.HONEST_RECREATIONAL, 71, 1500))}
    run = client.post("/api/v1/runs", json=body, headers=headers["owner"])
    assert run.status_code == 201, run.text
    owner_id = client.get("/api/v1/me", headers=headers["owner"]).json()["id"]
    return Cast(headers, owner_id, run.json()["id"], run.json()["fix_count"])


def _set(client: TestClient, who: Headers, **body: Any) -> dict[str, Any]:
    r = client.put("/api/v1/me/privacy", json={"zones": [], **body}, headers=who)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_defaults_are_everyone_and_no_zones(client: TestClient, cast: Cast) -> None:
    r = client.get("/api/v1/me/privacy", headers=cast.headers["owner"])
    assert r.json() == {"activity_visibility": "everyone", "zones": []}


# visibility -> viewers that see the activity list, viewers that get the shared track
EXPECTED = {
    "everyone": (set(VIEWERS), {"owner", "clubmate", "moderator"}),
    "club": ({"owner", "clubmate", "moderator"}, {"owner", "clubmate", "moderator"}),
    "nobody": ({"owner", "moderator"}, {"owner", "moderator"}),
}


@pytest.mark.parametrize("visibility", sorted(EXPECTED))
def test_visibility_matrix(client: TestClient, cast: Cast, visibility: str) -> None:
    _set(client, cast.headers["owner"], activity_visibility=visibility)
    list_ok, track_ok = EXPECTED[visibility]
    for viewer in VIEWERS:
        h = cast.headers[viewer]
        runs = client.get(f"/api/v1/runners/{cast.owner_id}/runs", headers=h)
        if viewer in list_ok:
            assert runs.status_code == 200, (viewer, runs.text)
            [summary] = runs.json()
            assert summary["id"] == cast.run_id
            assert set(summary) == {"id", "status", "distance_m", "duration_s", "date"}
        else:
            assert_problem(runs, 404, "not_found")
        shared = client.get(f"/api/v1/runs/{cast.run_id}/track?shared=true", headers=h)
        if viewer in track_ok:
            assert shared.status_code == 200, (viewer, shared.text)
        else:
            assert_problem(shared, 404, "not_found")
        # the unshared track and the run itself stay owner + moderator, whatever the setting
        whole = client.get(f"/api/v1/runs/{cast.run_id}/track", headers=h)
        run = client.get(f"/api/v1/runs/{cast.run_id}", headers=h)
        if viewer in ("owner", "moderator"):
            assert whole.status_code == 200 and run.status_code == 200
        else:
            assert_problem(whole, 404)
            assert_problem(run, 404)


def test_signed_out_sees_nothing(client: TestClient, cast: Cast) -> None:
    assert_problem(client.get(f"/api/v1/runners/{cast.owner_id}/runs"), 401)
    assert_problem(client.get(f"/api/v1/runs/{cast.run_id}/track?shared=true"), 401)
    assert_problem(client.get("/api/v1/me/privacy"), 401)


def test_unknown_runner_is_404(client: TestClient, cast: Cast) -> None:
    r = client.get("/api/v1/runners/nobody-at-all/runs", headers=cast.headers["moderator"])
    assert_problem(r, 404, "not_found")


def _dist_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371008.8 * math.asin(math.sqrt(a))


def test_zones_are_cut_from_the_shared_view_only(client: TestClient, cast: Cast) -> None:
    own = client.get(f"/api/v1/runs/{cast.run_id}/track", headers=cast.headers["owner"]).json()
    start, end = own[0], own[-1]
    zones = [
        {"lat": start["lat"], "lon": start["lon"], "radius_m": 200, "label": "home"},
        {"lat": end["lat"], "lon": end["lon"], "radius_m": 150, "label": "work"},
    ]
    saved = _set(client, cast.headers["owner"], activity_visibility="club", zones=zones)
    assert [z["label"] for z in saved["zones"]] == ["home", "work"]
    assert client.get("/api/v1/me/privacy", headers=cast.headers["owner"]).json() == saved

    url = f"/api/v1/runs/{cast.run_id}/track?shared=true"
    shared = client.get(url, headers=cast.headers["clubmate"]).json()
    assert 0 < len(shared) < cast.fix_count
    for p in shared:  # start, end and all their surroundings are gone
        assert _dist_m(p["lat"], p["lon"], start["lat"], start["lon"]) > 200
        assert _dist_m(p["lat"], p["lon"], end["lat"], end["lon"]) > 150
    assert shared[0]["t"] > start["t"] and shared[-1]["t"] < end["t"]

    for viewer in ("owner", "moderator"):  # always the full track
        for path in (url, f"/api/v1/runs/{cast.run_id}/track"):
            assert client.get(path, headers=cast.headers[viewer]).json() == own

    export = client.get("/api/v1/me/export", headers=cast.headers["owner"]).json()
    assert [z["label"] for z in export["privacy"]["zones"]] == ["home", "work"]


def test_put_replaces_the_zones(client: TestClient, cast: Cast) -> None:
    zone = {"lat": 52.5, "lon": 13.4, "radius_m": 100}
    _set(client, cast.headers["owner"], zones=[zone, zone])
    after = _set(client, cast.headers["owner"], activity_visibility="nobody")
    assert after == {"activity_visibility": "nobody", "zones": []}


@pytest.mark.parametrize(
    "body",
    [
        {"activity_visibility": "friends"},
        {"zones": [{"lat": 52.5, "lon": 13.4, "radius_m": 99}]},
        {"zones": [{"lat": 52.5, "lon": 13.4, "radius_m": 1001}]},
        {"zones": [{"lat": 91, "lon": 13.4, "radius_m": 200}]},
        {"zones": [{"lat": 52.5, "lon": 181, "radius_m": 200}]},
        {"zones": [{"lat": 52.5, "lon": 13.4}]},
        {"zones": [{"lat": 52.5, "lon": 13.4, "radius_m": 200, "label": "x" * 61}]},
        {"zones": [{"lat": 52.5, "lon": 13.4, "radius_m": 200}] * 6},
        {"zones": [], "owner_id": "someone"},
    ],
)
def test_invalid_settings_are_problem_documents(
    client: TestClient, cast: Cast, body: dict[str, Any]
) -> None:
    r = client.put("/api/v1/me/privacy", json=body, headers=cast.headers["owner"])
    assert_problem(r, 422, "invalid")
    assert client.get("/api/v1/me/privacy", headers=cast.headers["owner"]).json()["zones"] == []


async def _count(url: str, table: str, runner_id: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            stmt = text(f"SELECT count(*) FROM {table} WHERE runner_id = :r")
            return int((await conn.execute(stmt, {"r": runner_id})).scalar_one())
    finally:
        await engine.dispose()


def test_deleting_the_account_deletes_the_zones(
    client: TestClient, settings: Settings, cast: Cast
) -> None:
    zone = {"lat": 52.5, "lon": 13.4, "radius_m": 300, "label": "home"}
    _set(client, cast.headers["owner"], activity_visibility="club", zones=[zone])
    url = settings.database_url
    assert in_thread(asyncio.run, _count(url, "privacy_zones", cast.owner_id)) == 1
    r = client.request(
        "DELETE", "/api/v1/me", json={"password": "backwards!"}, headers=cast.headers["owner"]
    )
    assert r.status_code == 204, r.text
    assert in_thread(asyncio.run, _count(url, "privacy_zones", cast.owner_id)) == 0
    assert in_thread(asyncio.run, _count(url, "privacy_settings", cast.owner_id)) == 0
    gone = client.get(f"/api/v1/runners/{cast.owner_id}/runs", headers=cast.headers["moderator"])
    assert_problem(gone, 404)
