"""Export and account deletion: nothing personal can be read back afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import text

from game.generate import Profile
from server.config import Settings
from server.store.db import create_engine
from tests.api.conftest import assert_problem
from tests.api.helpers import create_user, points, recent_track
from tests.conftest import in_thread

Headers = dict[str, str]
SECRET = "I-WAS-RUNNING-BACKWARD-HONESTLY-42"


async def _dump(url: str) -> str:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT data, meta FROM events"))
            return "\n".join(f"{r.data} {r.meta}" for r in rows)
    finally:
        await engine.dispose()


def test_export_then_delete_leaves_nothing_personal(
    client: TestClient, settings: Settings, sign_up: Callable[..., Headers]
) -> None:
    me, other = sign_up("leaver_lou"), sign_up("stayer_sam")
    my_id = client.get("/api/v1/me", headers=me).json()["id"]
    honest = {"points": points(recent_track(Profile.HONEST_RECREATIONAL, 41, 800))}
    mine = client.post("/api/v1/runs", json=honest, headers=me).json()
    theirs = {"points": points(recent_track(Profile.HONEST_RECREATIONAL, 42, 600))}
    client.post("/api/v1/runs", json=theirs, headers=other)
    car = {"points": points(recent_track(Profile.CAR, 43, 3000))}
    rejected = client.post("/api/v1/runs", json=car, headers=me).json()
    assert rejected["status"] == "rejected"
    appeal = client.post(
        f"/api/v1/runs/{rejected['id']}/appeal", json={"message": SECRET}, headers=me
    )
    assert appeal.status_code == 200

    track = client.get(f"/api/v1/runs/{mine['id']}/track", headers=me).json()
    assert len(track) == mine["fix_count"]
    assert_problem(client.get(f"/api/v1/runs/{mine['id']}/track", headers=other), 404)
    exported = client.get("/api/v1/me/export", headers=me).json()
    assert exported["account"]["handle"] == "leaver_lou"
    by_id = {r["id"]: r for r in exported["runs"]}
    assert len(by_id[mine["id"]]["points"]) == mine["fix_count"]
    assert by_id[rejected["id"]]["appeals"] == [SECRET]
    assert SECRET not in in_thread(asyncio.run, _dump(settings.database_url))  # encrypted at rest

    assert_problem(
        client.request("DELETE", "/api/v1/me", json={"password": "nope"}, headers=me), 403
    )
    assert (
        client.request(
            "DELETE", "/api/v1/me", json={"password": "backwards!"}, headers=me
        ).status_code
        == 204
    )
    assert_problem(client.get("/api/v1/me", headers=me), 401)

    create_user(settings, "mod_mia", "moderator")
    t = client.post("/api/v1/auth/token", data={"username": "mod_mia", "password": "backwards!"})
    mod = {"Authorization": f"Bearer {t.json()['access_token']}"}
    assert_problem(
        client.get(f"/api/v1/runs/{mine['id']}/track", headers=mod), 404, "track_missing"
    )
    history = client.get(f"/api/v1/streams/run-{rejected['id']}/events", headers=mod).json()
    assert SECRET not in str(history)
    log = in_thread(asyncio.run, _dump(settings.database_url))
    assert SECRET not in log and "leaver_lou" not in log
    board = client.get("/api/v1/leaderboards/xp:all").json()
    assert {e["runner_id"]: e["handle"] for e in board["entries"]}[my_id] is None  # anonymous
    assert "stayer_sam" in {e["handle"] for e in board["entries"]}
    # the handle is free again
    assert (
        client.post(
            "/api/v1/auth/register", json={"handle": "leaver_lou", "password": "backwards!"}
        ).status_code
        == 201
    )
