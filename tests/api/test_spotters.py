"""Spotters REST API: invitations, pairings, share links (revocable) and what a link may watch."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.api.conftest import assert_problem

Headers = dict[str, str]


def _id(client: TestClient, headers: Headers) -> str:
    return str(client.get("/api/v1/me", headers=headers).json()["id"])


def test_invite_accept_list_and_unpair(client: TestClient, sign_up: Callable[..., Headers]) -> None:
    ann, bob, eve = sign_up("ann"), sign_up("bob"), sign_up("eve")
    ann_id, bob_id = _id(client, ann), _id(client, bob)

    r = client.post("/api/v1/spotters/invites", json={"handle": "Bob"}, headers=ann)
    assert r.status_code == 201, r.text
    assert r.json() | {"created_at": None} == {
        "runner_id": ann_id,
        "spotter_id": bob_id,
        "status": "invited",
        "created_at": None,
        "accepted_at": None,
    }
    assert_problem(
        client.post("/api/v1/spotters/invites", json={"handle": "bob"}, headers=ann),
        409,
        "already_invited",
    )
    assert_problem(
        client.post("/api/v1/spotters/invites", json={"handle": "nobody"}, headers=ann), 404
    )
    assert_problem(
        client.post("/api/v1/spotters/invites", json={"handle": "ann"}, headers=ann), 422
    )
    assert_problem(client.post("/api/v1/spotters/invites", json={"handle": "bob"}), 401)

    # only the invited account accepts, once
    assert_problem(client.post(f"/api/v1/spotters/invites/{ann_id}/accept", headers=eve), 404)
    r = client.post(f"/api/v1/spotters/invites/{ann_id}/accept", headers=bob)
    assert r.status_code == 200 and r.json()["status"] == "accepted" and r.json()["accepted_at"]
    assert_problem(
        client.post(f"/api/v1/spotters/invites/{ann_id}/accept", headers=bob),
        409,
        "already_accepted",
    )

    mine = client.get("/api/v1/spotters", headers=ann).json()
    assert [p["spotter_id"] for p in mine["spotters"]] == [bob_id] and mine["spotting"] == []
    theirs = client.get("/api/v1/spotters", headers=bob).json()
    assert [p["runner_id"] for p in theirs["spotting"]] == [ann_id]

    # either side ends it
    assert client.delete(f"/api/v1/spotters/pairings/{ann_id}", headers=bob).status_code == 204
    assert_problem(client.delete(f"/api/v1/spotters/pairings/{ann_id}", headers=bob), 404)
    assert client.get("/api/v1/spotters", headers=ann).json()["spotters"] == []


def test_share_link_lifecycle(client: TestClient, sign_up: Callable[..., Headers]) -> None:
    ann, eve = sign_up("ann"), sign_up("eve")
    ann_id = _id(client, ann)
    r = client.post("/api/v1/spotters/links", json={"label": "Mum"}, headers=ann)
    assert r.status_code == 201, r.text
    link = r.json()
    token = link["token"]
    assert link["active"] and link["label"] == "Mum" and len(token) >= 40
    assert link["watch_url"] == f"/api/v1/spotters/watch/{token}"

    # the token is never shown again, and only its hash is stored
    listed = client.get("/api/v1/spotters/links", headers=ann).json()
    assert [x["id"] for x in listed] == [link["id"]] and "token" not in listed[0]
    assert client.get("/api/v1/spotters/links", headers=eve).json() == []

    # anyone with the token sees what it follows (no account needed)
    watch = client.get(f"/api/v1/spotters/watch/{token}")
    assert watch.status_code == 200, watch.text
    assert watch.json()["runner_id"] == ann_id and watch.json()["handle"] == "ann"
    assert watch.json()["races"] == []
    assert_problem(client.get(f"/api/v1/spotters/watch/{'x' * 43}"), 404, "invalid_share_link")

    # only the owner revokes; then the link stops working; revoking again is fine
    assert_problem(client.delete(f"/api/v1/spotters/links/{link['id']}", headers=eve), 404)
    assert client.delete(f"/api/v1/spotters/links/{link['id']}", headers=ann).status_code == 204
    assert_problem(client.get(f"/api/v1/spotters/watch/{token}"), 404, "invalid_share_link")
    assert client.delete(f"/api/v1/spotters/links/{link['id']}", headers=ann).status_code == 204
    (revoked,) = client.get("/api/v1/spotters/links", headers=ann).json()
    assert not revoked["active"] and revoked["revoked_at"]
    assert_problem(
        client.post("/api/v1/spotters/links", json={"expires_in_s": 10}, headers=ann), 422
    )


def test_a_link_follows_the_runners_upcoming_races(
    client: TestClient, sign_up: Callable[..., Headers]
) -> None:
    from tests.api.helpers import create_user

    create_user(client.app.state.settings, "mod", "moderator")  # type: ignore[attr-defined]
    t = client.post("/api/v1/auth/token", data={"username": "mod", "password": "backwards!"})
    mod = {"Authorization": f"Bearer {t.json()['access_token']}"}
    ann = sign_up("ann")
    body = {"title": "Reverse 1k", "distance_m": 1000, "scheduled_at": "2030-03-01T09:00:00Z"}
    race = client.post("/api/v1/races", json=body, headers=mod).json()
    other = client.post("/api/v1/races", json={**body, "title": "Other 1k"}, headers=mod)
    assert other.status_code == 201  # ann is not in that one
    assert client.post(f"/api/v1/races/{race['id']}/register", headers=ann).status_code == 200
    token = client.post("/api/v1/spotters/links", json={}, headers=ann).json()["token"]
    races = client.get(f"/api/v1/spotters/watch/{token}").json()["races"]
    assert [(x["id"], x["status"], x["room"]) for x in races] == [
        (race["id"], "scheduled", f"/ws/rooms/{race['id']}")
    ]


def test_deleting_an_account_deletes_its_pairings_and_links(
    client: TestClient, sign_up: Callable[..., Headers]
) -> None:
    ann, bob = sign_up("ann"), sign_up("bob")
    ann_id = _id(client, ann)
    client.post("/api/v1/spotters/invites", json={"handle": "bob"}, headers=ann)
    client.post(f"/api/v1/spotters/invites/{ann_id}/accept", headers=bob)
    token = client.post("/api/v1/spotters/links", json={}, headers=ann).json()["token"]
    r = client.request("DELETE", "/api/v1/me", json={"password": "backwards!"}, headers=ann)
    assert r.status_code == 204, r.text
    assert client.get("/api/v1/spotters", headers=bob).json()["spotting"] == []
    assert_problem(client.get(f"/api/v1/spotters/watch/{token}"), 404, "invalid_share_link")
