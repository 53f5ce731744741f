"""Runs end to end: upload, verdict, idempotency, review, boards and challenges following."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from game.generate import Profile
from server.config import Settings
from tests.api.conftest import assert_problem
from tests.api.helpers import create_user, points, recent_track

Headers = dict[str, str]


def _mod(client: TestClient, settings: Settings) -> Headers:
    create_user(settings, "moddy", "moderator")
    t = client.post("/api/v1/auth/token", data={"username": "moddy", "password": "backwards!"})
    return {"Authorization": f"Bearer {t.json()['access_token']}"}


def test_an_honest_run_is_verified_and_ranked(
    client: TestClient, sign_up: Callable[..., Headers]
) -> None:
    me = sign_up("rita")
    weekly = client.get("/api/v1/challenges/current").json()
    assert client.post(f"/api/v1/challenges/{weekly['id']}/join", headers=me).status_code == 200

    track = recent_track(Profile.HONEST_RECREATIONAL, seed=3)
    r = client.post("/api/v1/runs", json={"points": points(track)}, headers=me)
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "verified", run["flags"]
    assert 1300 < run["distance_m"] < 1700
    assert run["credited_distance_m"] == run["distance_m"]
    assert run["duration_s"] > 0 and run["fix_count"] == len(track)

    assert client.get(f"/api/v1/runs/{run['id']}", headers=me).json()["status"] == "verified"
    assert [x["id"] for x in client.get("/api/v1/me/runs", headers=me).json()] == [run["id"]]

    xp = client.get("/api/v1/leaderboards/xp:all").json()
    assert xp["total"] == 1 and xp["entries"][0]["handle"] == "rita"
    assert xp["entries"][0]["score"] > 0
    progress = client.get(f"/api/v1/challenges/{weekly['id']}/progress", headers=me).json()
    assert progress["joined"] and progress["runs"] == 1 and progress["rank"] == 1


def test_a_car_is_rejected_with_reasons_and_never_ranked(
    client: TestClient, sign_up: Callable[..., Headers]
) -> None:
    me = sign_up("speedy")
    track = recent_track(Profile.CAR, seed=1, distance_m=5000)
    run = client.post("/api/v1/runs", json={"points": points(track)}, headers=me).json()
    assert run["status"] == "rejected"
    codes = {f["code"] for f in run["flags"]}
    assert codes & {"vehicle_speed", "superhuman_speed", "faster_than_world_record"}
    assert all({"code", "message", "evidence"} <= f.keys() for f in run["flags"])
    assert run["credited_distance_m"] == 0
    assert client.get("/api/v1/leaderboards/xp:all").json()["total"] == 0


def test_idempotent_retries_return_the_first_answer(
    client: TestClient, sign_up: Callable[..., Headers]
) -> None:
    me = sign_up("retry")
    body = {"points": points(recent_track(Profile.HONEST_RECREATIONAL, seed=4, distance_m=800))}
    key = {**me, "Idempotency-Key": "upload-1"}
    first = client.post("/api/v1/runs", json=body, headers=key)
    again = client.post("/api/v1/runs", json=body, headers=key)
    assert first.status_code == 201 and again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    assert len(client.get("/api/v1/me/runs", headers=me).json()) == 1
    other = {"points": body["points"][:-5]}
    assert_problem(
        client.post("/api/v1/runs", json=other, headers=key), 422, "idempotency_key_reused"
    )


def test_review_approve_then_reject_moves_every_board(
    client: TestClient, sign_up: Callable[..., Headers], settings: Settings
) -> None:
    me = sign_up("mocky")
    mod = _mod(client, settings)
    track = recent_track(Profile.MOCK_LOCATION, seed=2)
    run = client.post("/api/v1/runs", json={"points": points(track)}, headers=me).json()
    assert run["status"] == "review"
    assert "mock_location" in {f["code"] for f in run["flags"]}
    assert client.get("/api/v1/leaderboards/xp:all").json()["total"] == 0

    assert_problem(client.get("/api/v1/moderation/queue", headers=me), 403, "forbidden")
    queue = client.get("/api/v1/moderation/queue", headers=mod).json()
    assert [q["id"] for q in queue] == [run["id"]]

    approve = {"decision": "approve", "reason": "spotter confirmed the run"}
    r = client.post(f"/api/v1/runs/{run['id']}/review", json=approve, headers=mod)
    assert r.json()["status"] == "verified"
    assert client.get("/api/v1/leaderboards/xp:all").json()["total"] == 1
    assert client.get("/api/v1/moderation/queue", headers=mod).json() == []

    reject = {"decision": "reject", "reason": "second look: mock location all along"}
    r = client.post(f"/api/v1/runs/{run['id']}/review", json=reject, headers=mod)
    assert r.json()["status"] == "rejected"
    assert client.get("/api/v1/leaderboards/xp:all").json()["total"] == 1  # still listed ...
    assert client.get("/api/v1/leaderboards/xp:all").json()["entries"][0]["score"] == 0  # ... at 0

    appeal = client.post(
        f"/api/v1/runs/{run['id']}/appeal", json={"message": "it was me!"}, headers=me
    )
    assert appeal.json()["status"] == "review" and appeal.json()["appealed"]
    history = client.get(f"/api/v1/streams/run-{run['id']}/events", headers=mod).json()
    assert [e["type"] for e in history] == [
        "RunRecorded",
        "RunSentToReview",
        "RunVerified",
        "RunRejected",
        "RunAppealed",
    ]
    assert history[2]["meta"]["actor"] != history[0]["meta"]["actor"]
    assert_problem(client.get(f"/api/v1/streams/run-{run['id']}/events", headers=me), 403)


def test_runners_cannot_read_or_review_each_others_runs(
    client: TestClient, sign_up: Callable[..., Headers]
) -> None:
    a, b = sign_up("alice"), sign_up("bobby")
    run = client.post(
        "/api/v1/runs",
        json={"points": points(recent_track(Profile.HONEST_WALKER, 5, 500))},
        headers=a,
    ).json()
    assert_problem(client.get(f"/api/v1/runs/{run['id']}", headers=b), 404, "not_found")
    review = {"decision": "approve", "reason": "looks fine to me"}
    assert_problem(client.post(f"/api/v1/runs/{run['id']}/review", json=review, headers=b), 403)
    assert_problem(client.post("/api/v1/runs", json={"points": []}, headers=None or {}), 401)


def test_bad_tracks_are_clear_problems(client: TestClient, sign_up: Callable[..., Headers]) -> None:
    me = sign_up("baddy")
    fix = {"t": 1.7e9, "lat": 52.5, "lon": 13.4}
    assert_problem(client.post("/api/v1/runs", json={"points": []}, headers=me), 422, "invalid")
    bad_lat = client.post("/api/v1/runs", json={"points": [{**fix, "lat": 91}]}, headers=me)
    assert "lat" in str(assert_problem(bad_lat, 422, "invalid")["detail"])
    nan = b'{"points": [{"t": 1.7e9, "lat": NaN, "lon": 13.4}]}'
    r = client.post("/api/v1/runs", content=nan, headers={**me, "content-type": "application/json"})
    assert_problem(r, 422, "invalid")
    unknown = client.post("/api/v1/runs", json={"points": [fix], "owner": "x"}, headers=me)
    assert_problem(unknown, 422, "invalid")
    one = client.post("/api/v1/runs", json={"points": [fix]}, headers=me)
    assert one.status_code == 201 and one.json()["status"] == "rejected"
    assert_problem(
        client.post("/api/v1/runs", content=b"x", headers={**me, "content-type": "text/plain"}), 415
    )


def test_too_many_fixes_is_refused(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'cap.db'}", secret_key="k" * 40, max_fixes=10
    )
    from server.app import create_app

    with TestClient(create_app(settings)) as client:
        client.post("/api/v1/auth/register", json={"handle": "capped", "password": "backwards!"})
        tok = client.post(
            "/api/v1/auth/token", data={"username": "capped", "password": "backwards!"}
        )
        headers = {"Authorization": f"Bearer {tok.json()['access_token']}"}
        fixes = [{"t": 1.7e9 + i, "lat": 52.5, "lon": 13.4} for i in range(11)]
        assert_problem(
            client.post("/api/v1/runs", json={"points": fixes}, headers=headers),
            422,
            "too_many_fixes",
        )


def test_a_gpx_upload_is_checked_like_json(
    client: TestClient, sign_up: Callable[..., Headers]
) -> None:
    me = sign_up("garmin")
    track = recent_track(Profile.HONEST_RECREATIONAL, seed=8, distance_m=1000)
    from datetime import UTC, datetime

    pts = "".join(
        f'<trkpt lat="{track.lat[i]:.7f}" lon="{track.lon[i]:.7f}">'
        f"<time>{datetime.fromtimestamp(float(track.t[i]), UTC).isoformat()}</time></trkpt>"
        for i in range(len(track))
    )
    gpx = (
        '<?xml version="1.0"?><gpx version="1.1" creator="test" '
        'xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>' + pts + "</trkseg></trk></gpx>"
    )
    r = client.post(
        "/api/v1/runs",
        files={"gpx": ("run.gpx", gpx.encode(), "application/gpx+xml")},
        data={"activity": "backward_run"},
        headers=me,
    )
    assert r.status_code == 201, r.text
    json_run = client.post("/api/v1/runs", json={"points": points(track)}, headers=me).json()
    assert r.json()["status"] == json_run["status"]
    assert abs(r.json()["distance_m"] - json_run["distance_m"]) < 0.01 * json_run["distance_m"]
    assert r.json()["distance_m"] > 300
    broken = client.post(
        "/api/v1/runs", files={"gpx": ("x.gpx", b"<gpx><trk>", "application/gpx+xml")}, headers=me
    )
    assert_problem(broken, 422, "gpx_malformed")
