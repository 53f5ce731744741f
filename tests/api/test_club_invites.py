"""A runner's pending club invitations: listed for them alone, gone once accepted, declined or
overtaken by a join with the code."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from tests.api.conftest import assert_problem

Headers = dict[str, str]
INVITES = "/api/v1/clubs/invites"


def _id(client: TestClient, headers: Headers) -> str:
    return str(client.get("/api/v1/me", headers=headers).json()["id"])


def _club(client: TestClient, name: str, owner: Headers) -> dict[str, str]:
    club = client.post("/api/v1/clubs", json={"name": name}, headers=owner)
    assert club.status_code == 201, club.text
    return dict(club.json())


def _invite(client: TestClient, club_id: str, handle: str, by: Headers) -> None:
    r = client.post(f"/api/v1/clubs/{club_id}/invites", json={"handle": handle}, headers=by)
    assert r.status_code == 201, r.text


def _pending(client: TestClient, headers: Headers) -> list[str]:
    r = client.get(INVITES, headers=headers)
    assert r.status_code == 200, r.text
    return [i["club_name"] for i in r.json()]


def test_a_runner_sees_only_their_own_pending_invitations(
    client: TestClient, sign_up: Callable[..., Headers]
) -> None:
    owner, bob, ann, eve = sign_up("olga"), sign_up("bobby"), sign_up("annie"), sign_up("evie")
    rovers = _club(client, "Reverse Rovers", owner)
    walkers = _club(client, "Backwards Walkers", owner)
    before = datetime.now(UTC) - timedelta(seconds=1)
    _invite(client, rovers["id"], "bobby", owner)
    _invite(client, walkers["id"], "bobby", owner)
    _invite(client, rovers["id"], "annie", owner)

    assert_problem(client.get(INVITES), 401)
    mine = client.get(INVITES, headers=bob).json()
    assert [(i["club_id"], i["club_name"], i["members"]) for i in mine] == [
        (walkers["id"], "Backwards Walkers", 1),
        (rovers["id"], "Reverse Rovers", 1),
    ]
    for item in mine:
        assert item["invited_by"] == _id(client, owner)
        assert item["invited_by_handle"] == "olga"
        assert before <= datetime.fromisoformat(item["invited_at"]) <= datetime.now(UTC)
    assert _pending(client, ann) == ["Reverse Rovers"]
    assert _pending(client, eve) == []
    assert _pending(client, owner) == []  # the owner's own membership is no invitation

    # another runner cannot accept or decline bob's invitation
    assert_problem(client.post(f"/api/v1/clubs/{walkers['id']}/invites/accept", headers=eve), 403)
    assert_problem(client.post(f"/api/v1/clubs/{walkers['id']}/invites/decline", headers=eve), 403)
    assert _pending(client, bob) == ["Backwards Walkers", "Reverse Rovers"]


def test_accepted_and_declined_invitations_disappear(
    client: TestClient, sign_up: Callable[..., Headers]
) -> None:
    owner, bob = sign_up("olga"), sign_up("bobby")
    rovers = _club(client, "Reverse Rovers", owner)
    walkers = _club(client, "Backwards Walkers", owner)
    _invite(client, rovers["id"], "bobby", owner)
    _invite(client, walkers["id"], "bobby", owner)

    joined = client.post(f"/api/v1/clubs/{rovers['id']}/invites/accept", headers=bob)
    assert joined.json()["your_role"] == "member" and joined.json()["members"] == 2
    assert _pending(client, bob) == ["Backwards Walkers"]
    assert [c["name"] for c in client.get("/api/v1/clubs/mine", headers=bob).json()] == [
        "Reverse Rovers"
    ]

    declined = client.post(f"/api/v1/clubs/{walkers['id']}/invites/decline", headers=bob)
    assert declined.status_code == 204
    assert _pending(client, bob) == []
    assert client.get(f"/api/v1/clubs/{walkers['id']}", headers=bob).json()["your_role"] is None
    assert client.get(f"/api/v1/clubs/{walkers['id']}", headers=owner).json()["members"] == 1
    assert_problem(client.post(f"/api/v1/clubs/{walkers['id']}/invites/accept", headers=bob), 403)
    assert_problem(client.post(f"/api/v1/clubs/{walkers['id']}/invites/decline", headers=bob), 403)
    assert_problem(client.post("/api/v1/clubs/nosuchclub/invites/decline", headers=bob), 404)

    # a declined invitation may be sent again
    _invite(client, walkers["id"], "bobby", owner)
    assert _pending(client, bob) == ["Backwards Walkers"]


def test_joining_with_the_code_settles_a_pending_invitation(
    client: TestClient, sign_up: Callable[..., Headers]
) -> None:
    owner, bob = sign_up("olga"), sign_up("bobby")
    rovers = _club(client, "Reverse Rovers", owner)
    _invite(client, rovers["id"], "bobby", owner)
    joined = client.post("/api/v1/clubs/join", json={"code": rovers["join_code"]}, headers=bob)
    assert joined.status_code == 200, joined.text
    assert _pending(client, bob) == []
    assert [c["name"] for c in client.get("/api/v1/clubs/mine", headers=bob).json()] == [
        "Reverse Rovers"
    ]
    assert client.get(f"/api/v1/clubs/{rovers['id']}", headers=owner).json()["members"] == 2
    assert_problem(client.post(f"/api/v1/clubs/{rovers['id']}/invites/accept", headers=bob), 403)
