"""Club lifecycle: join code, invitations, roles, club events, calendar and the club board."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from game.generate import Profile
from tests.api.conftest import assert_problem
from tests.api.helpers import points, recent_track

Headers = dict[str, str]


def _id(client: TestClient, headers: Headers) -> str:
    return str(client.get("/api/v1/me", headers=headers).json()["id"])


def test_club_lifecycle(client: TestClient, sign_up: Callable[..., Headers]) -> None:
    owner, ann, bob, eve = sign_up("owner"), sign_up("ann"), sign_up("bob"), sign_up("eve")
    club = client.post("/api/v1/clubs", json={"name": "Reverse Rovers"}, headers=owner).json()
    cid, code = club["id"], club["join_code"]
    assert club["your_role"] == "owner" and code

    joined = client.post("/api/v1/clubs/join", json={"code": code}, headers=ann).json()
    assert joined["your_role"] == "member" and joined["join_code"] is None  # members never see it
    assert_problem(client.post("/api/v1/clubs/join", json={"code": "nope-nope"}, headers=bob), 404)
    assert_problem(
        client.post("/api/v1/clubs/join", json={"code": code}, headers=ann), 409, "already_member"
    )

    # only admins invite; bob accepts; eve (not invited) cannot
    assert_problem(
        client.post(f"/api/v1/clubs/{cid}/invites", json={"handle": "bob"}, headers=ann), 403
    )
    assert (
        client.post(
            f"/api/v1/clubs/{cid}/invites", json={"handle": "bob"}, headers=owner
        ).status_code
        == 201
    )
    assert (
        client.post(f"/api/v1/clubs/{cid}/invites/accept", headers=bob).json()["your_role"]
        == "member"
    )
    assert_problem(client.post(f"/api/v1/clubs/{cid}/invites/accept", headers=eve), 403)

    # the owner makes ann an admin; ann schedules a members-only club race
    ann_id, bob_id = _id(client, ann), _id(client, bob)
    r = client.put(
        f"/api/v1/clubs/{cid}/members/{ann_id}/role", json={"role": "admin"}, headers=owner
    )
    assert r.json() == {"runner_id": ann_id, "role": "admin"}
    race_body = {
        "title": "Club Reverse 3k",
        "distance_m": 3000,
        "scheduled_at": "2030-03-01T09:00:00Z",
        "club_id": cid,
        "open": False,
    }
    assert_problem(client.post("/api/v1/races", json=race_body, headers=bob), 403, "forbidden")
    race = client.post("/api/v1/races", json=race_body, headers=ann).json()
    assert client.post(f"/api/v1/races/{race['id']}/register", headers=bob).status_code == 200
    assert_problem(client.post(f"/api/v1/races/{race['id']}/register", headers=eve), 403)

    challenge = {
        "title": "Rovers 20k",
        "kind": "distance",
        "target_value": 20000,
        "starts_at": "2030-02-01T00:00:00Z",
        "ends_at": "2030-03-01T00:00:00Z",
        "club_id": cid,
    }
    assert client.post("/api/v1/challenges", json=challenge, headers=ann).json()["scope"] == "club"
    assert_problem(client.post("/api/v1/challenges", json=challenge, headers=eve), 403)

    cal = client.get(f"/api/v1/clubs/{cid}/calendar", headers=bob).json()
    assert [(i["kind"], i["title"]) for i in cal] == [
        ("challenge", "Rovers 20k"),
        ("race", "Club Reverse 3k"),
    ]
    assert_problem(client.get(f"/api/v1/clubs/{cid}/calendar", headers=eve), 403)
    feed_url = client.get(f"/api/v1/clubs/{cid}", headers=bob).json()["calendar_url"]
    ics = client.get(feed_url)
    assert ics.headers["content-type"].startswith("text/calendar")
    assert ics.text.count("BEGIN:VEVENT") == 2 and "SUMMARY:Race: Club Reverse 3k" in ics.text
    assert_problem(client.get(f"/api/v1/clubs/{cid}/calendar.ics?key=forged"), 403)

    # admins remove members, only the owner removes admins, the owner cannot leave
    assert client.delete(f"/api/v1/clubs/{cid}/members/{bob_id}", headers=ann).status_code == 204
    owner_id = _id(client, owner)
    assert_problem(client.delete(f"/api/v1/clubs/{cid}/members/{owner_id}", headers=ann), 403)
    assert_problem(
        client.post(f"/api/v1/clubs/{cid}/leave", headers=owner), 409, "owner_cannot_leave"
    )
    moved = client.post(f"/api/v1/clubs/{cid}/transfer", json={"runner_id": ann_id}, headers=owner)
    assert moved.json()["owner_id"] == ann_id and moved.json()["your_role"] == "admin"
    assert client.post(f"/api/v1/clubs/{cid}/leave", headers=owner).status_code == 204
    club_now = client.get(f"/api/v1/clubs/{cid}", headers=ann).json()
    assert {m["runner_id"]: m["role"] for m in club_now["member_list"]} == {ann_id: "owner"}
    old_code = club_now["join_code"]
    new = client.post(f"/api/v1/clubs/{cid}/join-code", headers=ann).json()["join_code"]
    assert new != old_code
    assert_problem(client.post("/api/v1/clubs/join", json={"code": old_code}, headers=eve), 404)


def test_the_club_board_ranks_members_by_distance(
    client: TestClient, sign_up: Callable[..., Headers]
) -> None:
    owner, ann = sign_up("captain"), sign_up("annie")
    club = client.post("/api/v1/clubs", json={"name": "Backpedallers"}, headers=owner).json()
    client.post("/api/v1/clubs/join", json={"code": club["join_code"]}, headers=ann)
    run = client.post(
        "/api/v1/runs",
        json={"points": points(recent_track(Profile.HONEST_RECREATIONAL, 21, 900))},
        headers=ann,
    ).json()
    assert run["status"] == "verified"
    board = client.get(f"/api/v1/leaderboards/club:{club['id']}").json()
    assert [e["handle"] for e in board["entries"]] == ["annie", "captain"]
    assert board["entries"][0]["score"] == run["credited_distance_m"]
    assert [c["name"] for c in client.get("/api/v1/clubs/mine", headers=ann).json()] == [
        "Backpedallers"
    ]
