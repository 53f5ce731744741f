"""Drill sessions over REST: the library, scheduling (templates and coach-made), reading."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from server.config import Settings
from tests.api.conftest import assert_problem
from tests.api.helpers import create_user

Headers = dict[str, str]


def test_coaches_schedule_drills_from_the_library_or_their_own(
    client: TestClient, settings: Settings, sign_up: Callable[..., Headers]
) -> None:
    library = client.get("/api/v1/drills/templates").json()
    assert len(library) >= 8 and {t["level"] for t in library} == {
        "beginner",
        "intermediate",
        "advanced",
    }
    create_user(settings, "coach_kim", "moderator")
    t = client.post("/api/v1/auth/token", data={"username": "coach_kim", "password": "backwards!"})
    coach = {"Authorization": f"Bearer {t.json()['access_token']}"}
    runner = sign_up("drillee")

    assert_problem(
        client.post("/api/v1/drills", json={"template": "switch-it"}, headers=runner), 403
    )
    drill = client.post("/api/v1/drills", json={"template": "switch-it"}, headers=coach).json()
    assert (
        drill["status"] == "scheduled"
        and drill["cues"] == []
        and drill["room"].endswith(drill["id"])
    )
    assert client.get(f"/api/v1/drills/{drill['id']}").json()["title"] == "Switch It Up"

    own = {
        "title": "Lunchtime reflexes",
        "level": "advanced",
        "phases": [
            {"move": "backpedal", "duration_s": 20},
            {"move": "switch_reaction", "duration_s": 40, "switch_cues": 6},
        ],
    }
    made = client.post("/api/v1/drills", json=own, headers=coach).json()
    assert [p["move"] for p in made["phases"]] == ["backpedal", "switch_reaction"]
    too_many = {**own, "phases": [{"move": "switch_reaction", "duration_s": 10, "switch_cues": 8}]}
    assert_problem(client.post("/api/v1/drills", json=too_many, headers=coach), 422, "invalid")
    assert_problem(client.post("/api/v1/drills", json={"template": "nope"}, headers=coach), 422)
    assert_problem(client.post("/api/v1/drills", json={}, headers=coach), 422)
    assert_problem(client.get("/api/v1/drills/drill-missing"), 404)
