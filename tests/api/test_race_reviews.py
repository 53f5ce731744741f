"""A race finish the pace check sent to review: in the moderators' queue with its evidence,
approved (credited like a run: XP, challenge progress, boards, results) or rejected."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from game import races
from game.generate import Profile, generate
from game.pace import Activity, Flag, check_track, policy_for
from server.commands import execute
from server.config import Settings
from server.store.db import create_engine
from server.store.event_store import EventStore
from tests.api.conftest import assert_problem
from tests.api.helpers import create_user
from tests.conftest import in_thread

Headers = dict[str, str]
SPIKE = Flag("speed_spike", "a burst faster than a backward runner", 40, False, {"max_mps": 7.9})


def _login(client: TestClient, handle: str) -> Headers:
    t = client.post("/api/v1/auth/token", data={"username": handle, "password": "backwards!"})
    return {"Authorization": f"Bearer {t.json()['access_token']}"}


async def _run_race(settings: Settings, race_id: str, doubted: str, clean: str) -> None:
    """Gun 15 minutes ago; `doubted` finishes in review (one flag), `clean` verified; closed."""
    engine = create_engine(settings.database_url)
    store, stream = EventStore(engine), f"race-{race_id}"
    gun = time.time() - 900.0
    track = generate(Profile.HONEST_RECREATIONAL, 3, gun, 900.0)
    verdict = check_track(track, policy_for(Activity.RACE), now=float(track.t[-1]) + 5)
    assert verdict.status == "verified"
    review = dataclasses.replace(verdict, status="review", score=40, flags=(SPIKE,))

    def at(t: float) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    try:
        await execute(store, stream, races, races.StartCountdown("mod", 3.0), now=at(gun - 3))
        finish = races.Finish(doubted, 300.0, 800.0, review)
        await execute(store, stream, races, finish, now=at(gun + 300))
        finish = races.Finish(clean, 320.0, 800.0, verdict)
        await execute(store, stream, races, finish, now=at(gun + 320))
        await execute(store, stream, races, races.Close("mod"), now=at(gun + 600))
    finally:
        store.close()
        await engine.dispose()


def _until(probe: Callable[[], Any], what: str) -> Any:
    """Poll until the projections caught up with events appended from outside (bounded)."""
    for _ in range(200):
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"never saw {what}")


def _xp(client: TestClient, runner_id: str) -> float:
    page = client.get("/api/v1/leaderboards/xp:all").json()
    return next((e["score"] for e in page["entries"] if e["runner_id"] == runner_id), 0.0)


def test_a_race_finish_in_review_is_queued_approved_credited_then_rejected(
    client: TestClient, settings: Settings, sign_up: Callable[..., Headers]
) -> None:
    create_user(settings, "mod", "moderator")
    mod = _login(client, "mod")
    ann, bob, cy = sign_up("ann"), sign_up("bob"), sign_up("cyd")
    ids = {
        h: client.get("/api/v1/me", headers=hd).json()["id"]
        for h, hd in [("ann", ann), ("bob", bob)]
    }
    now = datetime.now(UTC)
    challenge = client.post(
        "/api/v1/challenges",
        json={
            "title": "Race month",
            "kind": "distance",
            "target_value": 5000,
            "starts_at": (now - timedelta(days=1)).isoformat(),
            "ends_at": (now + timedelta(days=6)).isoformat(),
        },
        headers=mod,
    ).json()
    assert client.post(f"/api/v1/challenges/{challenge['id']}/join", headers=ann).status_code == 200
    race = client.post(
        "/api/v1/races",
        json={
            "title": "Review me",
            "distance_m": 800,
            "scheduled_at": (now + timedelta(hours=1)).isoformat(),
        },
        headers=mod,
    ).json()
    for who in (ann, bob):
        assert client.post(f"/api/v1/races/{race['id']}/register", headers=who).status_code == 200
    in_thread(asyncio.run, _run_race(settings, race["id"], ids["ann"], ids["bob"]))

    # the queue: ann's finish, with its race and evidence; bob's verified finish is not there
    def queued() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = client.get("/api/v1/moderation/queue", headers=mod).json()
        return [i for i in items if i["activity"] == "race"]

    [item] = _until(queued, "the race finish in the queue")
    assert (item["runner_id"], item["race_id"], item["score"]) == (ids["ann"], race["id"], 40)
    assert item["codes"] == ["speed_spike"]
    assert item["flags"][0]["evidence"] == {"max_mps": 7.9}
    assert (item["distance_m"], item["duration_s"]) == (800.0, 300.0)
    run_id = item["id"]
    results = client.get(f"/api/v1/races/{race['id']}/results").json()["results"]
    assert [(r["runner_id"], r["status"]) for r in results] == [
        (ids["ann"], "review"),
        (ids["bob"], "finished"),
    ]
    assert _xp(client, ids["ann"]) == 0.0

    # who sees it, who decides it
    assert client.get(f"/api/v1/runs/{run_id}", headers=ann).json()["status"] == "review"
    assert client.get(f"/api/v1/runs/{run_id}", headers=mod).json()["activity"] == "race"
    assert_problem(client.get(f"/api/v1/runs/{run_id}", headers=cy), 404, "not_found")
    approve = {"decision": "approve", "reason": "watched the finish line video"}
    for who in (ann, cy):
        assert_problem(client.post(f"/api/v1/runs/{run_id}/review", json=approve, headers=who), 403)
    crop = {"decision": "crop", "reason": "only the second half", "crop_start": 0, "crop_stop": 5}
    assert_problem(
        client.post(f"/api/v1/runs/{run_id}/review", json=crop, headers=mod), 422, "invalid"
    )

    # approved: credited everywhere, placed as a finisher, out of the queue
    done = client.post(f"/api/v1/runs/{run_id}/review", json=approve, headers=mod)
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["credited_distance_m"]) == ("verified", 800.0)
    assert queued() == []
    progress = client.get(f"/api/v1/challenges/{challenge['id']}/progress", headers=ann).json()
    assert (progress["value"], progress["runs"]) == (800.0, 1)
    assert _xp(client, ids["ann"]) > 0
    week = client.get("/api/v1/leaderboards/" + _weekly(time.time() - 600)).json()
    assert ids["ann"] in [e["runner_id"] for e in week["entries"]]
    results = client.get(f"/api/v1/races/{race['id']}/results").json()["results"]
    assert results[0] == {
        "place": 1,
        "runner_id": ids["ann"],
        "time_s": 300.0,
        "distance_m": 800.0,
        "status": "finished",
    }
    again = client.post(f"/api/v1/runs/{run_id}/review", json=approve, headers=mod)
    assert_problem(again, 409, "already_verified")

    # reversed: the credit goes, bob moves up; the log holds both decisions with their actor
    reject = {"decision": "reject", "reason": "second look: a bike at 7.9 m/s"}
    done = client.post(f"/api/v1/runs/{run_id}/review", json=reject, headers=mod)
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["credited_distance_m"]) == ("rejected", 0.0)
    progress = client.get(f"/api/v1/challenges/{challenge['id']}/progress", headers=ann).json()
    assert (progress["value"], progress["runs"]) == (0.0, 0)
    assert _xp(client, ids["ann"]) == 0.0
    results = client.get(f"/api/v1/races/{race['id']}/results").json()["results"]
    assert [(r["place"], r["runner_id"], r["status"]) for r in results] == [
        (1, ids["bob"], "finished"),
        (None, ids["ann"], "dq"),
    ]
    audit = client.get(f"/api/v1/streams/race-{race['id']}/events", headers=mod).json()
    decided = [e for e in audit if e["type"] in ("RaceFinishApproved", "RaceFinishRejected")]
    assert [e["type"] for e in decided] == ["RaceFinishApproved", "RaceFinishRejected"]


def _weekly(t: float) -> str:
    year, week, _ = datetime.fromtimestamp(t, UTC).isocalendar()
    return f"weekly:{year}-W{week:02d}"


def _race(client: TestClient, mod: Headers, title: str) -> dict[str, Any]:
    """An 800 m race an hour from now, scheduled by `mod`."""
    when = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {"title": title, "distance_m": 800, "scheduled_at": when}
    race: dict[str, Any] = client.post("/api/v1/races", json=body, headers=mod).json()
    return race


def test_a_late_disqualification_over_rest_reranks_and_takes_the_credit_back(
    client: TestClient, settings: Settings, sign_up: Callable[..., Headers]
) -> None:
    create_user(settings, "mod2", "moderator")
    mod = _login(client, "mod2")
    ann, bob = sign_up("ann2"), sign_up("bob2")
    ids = {
        h: client.get("/api/v1/me", headers=hd).json()["id"] for h, hd in [("a", ann), ("b", bob)]
    }
    race = _race(client, mod, "Late call")
    for who in (ann, bob):
        assert client.post(f"/api/v1/races/{race['id']}/register", headers=who).status_code == 200
    in_thread(asyncio.run, _run_race(settings, race["id"], ids["a"], ids["b"]))
    _until(lambda: _xp(client, ids["b"]) > 0, "bob's verified finish credited")
    url = f"/api/v1/races/{race['id']}/disqualify"
    call = {"runner_id": ids["b"], "reason": "the finish line video shows a bike"}
    assert_problem(client.post(url, json=call, headers=ann), 403, "forbidden")
    assert_problem(client.post(url, json={**call, "runner_id": "nobody"}, headers=mod), 422)
    done = client.post(url, json=call, headers=mod)
    assert done.status_code == 200, done.text
    assert [(r["place"], r["runner_id"], r["status"]) for r in done.json()["results"]] == [
        (1, ids["a"], "review"),
        (None, ids["b"], "dq"),
    ]
    assert _xp(client, ids["b"]) == 0.0  # the race no longer counts for him
    assert_problem(client.post(url, json=call, headers=mod), 409, "already_disqualified")
    cancel = client.post(f"/api/v1/races/{race['id']}/cancel", json={"reason": "x"}, headers=mod)
    assert_problem(cancel, 409, "race_over")


def test_an_organiser_calls_a_race_off_with_a_reason(
    client: TestClient, settings: Settings, sign_up: Callable[..., Headers]
) -> None:
    create_user(settings, "mod3", "moderator")
    mod = _login(client, "mod3")
    runner = sign_up("cal")
    race = _race(client, mod, "Rained off")
    url = f"/api/v1/races/{race['id']}/cancel"
    assert_problem(client.post(url, json={"reason": "storm"}, headers=runner), 403, "forbidden")
    assert_problem(client.post(url, json={}, headers=mod), 422, "invalid")
    done = client.post(url, json={"reason": "a storm is forecast"}, headers=mod)
    assert done.status_code == 200 and done.json()["status"] == "aborted", done.text
    assert race["id"] not in [r["id"] for r in client.get("/api/v1/races").json()]
    assert_problem(
        client.post(f"/api/v1/races/{race['id']}/register", headers=runner),
        409,
        "registration_closed",
    )
