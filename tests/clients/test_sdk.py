"""The SDK against a real server on a loopback port: REST calls, problem documents, rooms."""

from __future__ import annotations

import time
import uuid

import pytest

from clients.sdk import ApiError, RetroRunClient
from clients.simulate import track_fixes
from game.generate import Profile, generate
from tests.api.helpers import create_user
from tests.clients.conftest import LiveServer

PASSWORD = "backwards!"


def _handle(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def _signed_in(server: LiveServer, prefix: str = "sdk") -> RetroRunClient:
    api = RetroRunClient(server.base_url)
    handle = _handle(prefix)
    await api.register(handle, PASSWORD)
    await api.login(handle, PASSWORD)
    return api


def _recent(profile: Profile, seed: int, distance_m: float) -> list[dict[str, float | bool]]:
    """A generated track that ended a minute ago, as JSON fixes."""
    probe = generate(profile, seed, 0.0, distance_m)
    duration = float(probe.t[-1] - probe.t[0])
    return track_fixes(generate(profile, seed, time.time() - duration - 60.0, distance_m))


async def test_register_login_me(live_server: LiveServer) -> None:
    async with RetroRunClient(live_server.base_url) as api:
        handle = _handle("me")
        created = await api.register(handle, PASSWORD)
        assert created["handle"] == handle and created["role"] == "runner"
        token = await api.login(handle, PASSWORD)
        assert token and api.token == token
        me = await api.me()
        assert me["id"] == created["id"] and me["handle"] == handle


async def test_problem_documents_raise_api_error(live_server: LiveServer) -> None:
    async with RetroRunClient(live_server.base_url) as api:
        with pytest.raises(ApiError) as short:
            await api.register("x", PASSWORD)  # handle too short
        assert short.value.status == 422 and short.value.code == "invalid"
        assert "handle" in short.value.detail
        with pytest.raises(ApiError) as anonymous:
            await api.me()
        assert anonymous.value.status == 401
        handle = _handle("dup")
        await api.register(handle, PASSWORD)
        with pytest.raises(ApiError) as taken:
            await api.register(handle, PASSWORD)
        assert (taken.value.status, taken.value.code) == (409, "handle_taken")
        with pytest.raises(ApiError) as wrong:
            await api.login(handle, "not-the-password")
        assert (wrong.value.status, wrong.value.code) == (401, "invalid_credentials")
        assert wrong.value.body["status"] == 401


async def test_join_the_weekly_challenge_submit_a_run_and_rank(live_server: LiveServer) -> None:
    api = await _signed_in(live_server, "runner")
    async with api:
        me = await api.me()
        weekly = await api.current_challenge()
        assert weekly["id"] in {c["id"] for c in await api.challenges()}
        joined = await api.join_challenge(weekly["id"])
        assert joined["joined"] and joined["runs"] == 0

        points = _recent(Profile.HONEST_RECREATIONAL, seed=3, distance_m=1500)
        key = uuid.uuid4().hex
        run = await api.submit_run(
            points, checklist={"flat_clear_surface": True}, idempotency_key=key
        )
        assert run["status"] == "verified", run["flags"]
        assert 1300 < run["distance_m"] < 1700 and run["fix_count"] == len(points)
        again = await api.submit_run(
            points, checklist={"flat_clear_surface": True}, idempotency_key=key
        )
        assert again["id"] == run["id"]  # an idempotent retry returns the first answer
        assert (await api.run(run["id"]))["status"] == "verified"

        progress = await api.progress(weekly["id"])
        assert progress["runs"] == 1 and progress["rank"] is not None
        board = await api.leaderboard("xp:all", limit=100)
        mine = [e for e in board["entries"] if e["runner_id"] == me["id"]]
        assert len(mine) == 1 and mine[0]["score"] > 0 and mine[0]["handle"] == me["handle"]
        near = await api.around("xp:all", me["id"], radius=1)
        assert me["id"] in {e["runner_id"] for e in near["entries"]}
        page = await api.leaderboard("xp:all", limit=1, offset=0)
        assert page["limit"] == 1 and len(page["entries"]) <= 1


async def test_a_car_run_is_rejected_through_the_sdk(live_server: LiveServer) -> None:
    api = await _signed_in(live_server, "car")
    async with api:
        run = await api.submit_run(_recent(Profile.CAR, seed=1, distance_m=5000))
        assert run["status"] == "rejected"
        assert {f["code"] for f in run["flags"]} & {"vehicle_speed", "superhuman_speed"}
        with pytest.raises(ApiError) as missing:
            await api.run("no-such-run")
        assert missing.value.status == 404
        with pytest.raises(ApiError) as unranked:
            await api.around("xp:all", (await api.me())["id"])
        assert (unranked.value.status, unranked.value.code) == (404, "not_ranked")
