"""Bans: a banned runner leaves every board and can do nothing; an unban restores them."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from game.generate import Profile
from server.config import Settings
from tests.api.conftest import assert_problem
from tests.api.helpers import create_user, points, recent_track

Headers = dict[str, str]


def test_ban_and_unban(
    client: TestClient, settings: Settings, sign_up: Callable[..., Headers]
) -> None:
    create_user(settings, "judge", "moderator")
    t = client.post("/api/v1/auth/token", data={"username": "judge", "password": "backwards!"})
    mod = {"Authorization": f"Bearer {t.json()['access_token']}"}
    cheat, honest = sign_up("cheaty"), sign_up("honesty")
    weekly = client.get("/api/v1/challenges/current").json()["id"]
    club = client.post("/api/v1/clubs", json={"name": "Ban Test Club"}, headers=cheat).json()
    client.post(f"/api/v1/challenges/{weekly}/join", headers=cheat)
    for who, seed in ((cheat, 31), (honest, 32)):
        body = {"points": points(recent_track(Profile.HONEST_RECREATIONAL, seed, 700))}
        assert client.post("/api/v1/runs", json=body, headers=who).json()["status"] == "verified"
    cheat_id = client.get("/api/v1/me", headers=cheat).json()["id"]
    boards = ["xp:all", f"challenge:{weekly}", f"club:{club['id']}"]

    def ranked(board: str) -> set[str]:
        return {
            e["runner_id"] for e in client.get(f"/api/v1/leaderboards/{board}").json()["entries"]
        }

    assert all(cheat_id in ranked(b) for b in boards)
    assert_problem(
        client.post(
            f"/api/v1/moderation/runners/{cheat_id}/ban", json={"reason": "car"}, headers=honest
        ),
        403,
    )
    r = client.post(
        f"/api/v1/moderation/runners/{cheat_id}/ban", json={"reason": "drove a car"}, headers=mod
    )
    assert r.json() == {"runner_id": cheat_id, "banned": True}
    assert not any(cheat_id in ranked(b) for b in boards)
    assert len(ranked("xp:all")) == 1
    assert_problem(client.get("/api/v1/me", headers=cheat), 403, "banned")
    login = client.post("/api/v1/auth/token", data={"username": "cheaty", "password": "backwards!"})
    assert_problem(login, 403, "banned")
    again = client.post(
        f"/api/v1/moderation/runners/{cheat_id}/ban", json={"reason": "twice"}, headers=mod
    )
    assert_problem(again, 409, "already_banned")

    r = client.post(
        f"/api/v1/moderation/runners/{cheat_id}/unban", json={"reason": "appeal ok"}, headers=mod
    )
    assert r.json()["banned"] is False
    assert all(cheat_id in ranked(b) for b in boards)
    history = client.get(f"/api/v1/streams/runner-{cheat_id}/events", headers=mod).json()
    assert [(e["type"], e["data"]["reason"]) for e in history] == [
        ("RunnerBanned", "drove a car"),
        ("RunnerUnbanned", "appeal ok"),
    ]
    assert_problem(
        client.post("/api/v1/moderation/runners/nobody/ban", json={"reason": "x!x"}, headers=mod),
        404,
    )
