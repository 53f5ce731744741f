"""Board pages over HTTP: ETags and 304s, and a page cache that never serves a page the boards
have moved past, on SQL boards and on Redis boards (also when another server wrote them).

Every test sets the page cache's lifetime to an hour, so a page that changes here changed because
the cache saw the board move, not because it expired. Redis tests use a club board: club ids are
random, so suites sharing the test Redis do not see each other's entries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from game.generate import Profile
from server.api.boards import CachedPage, PageCache
from server.app import create_app
from server.boards.base import BoardPage
from server.config import Settings
from tests.api.helpers import create_user, points, recent_track

Headers = dict[str, str]
AN_HOUR_S = 3600.0


def _client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False)


def _hold_pages(client: TestClient, ttl_s: float = AN_HOUR_S) -> PageCache:
    cache: PageCache = client.app_state["board_pages"]
    cache.ttl_s = ttl_s
    return cache


@pytest.fixture(params=["sql", "redis"])
def backend_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "sql":
        return settings
    return settings.model_copy(update={"redis_url": request.getfixturevalue("redis_url")})


@pytest.fixture
def app(backend_settings: Settings) -> Iterator[TestClient]:
    with _client(backend_settings) as c:
        _hold_pages(c)
        yield c


def _sign_up(client: TestClient, handle: str) -> Headers:
    r = client.post("/api/v1/auth/register", json={"handle": handle, "password": "backwards!"})
    assert r.status_code == 201, r.text
    t = client.post("/api/v1/auth/token", data={"username": handle, "password": "backwards!"})
    return {"Authorization": f"Bearer {t.json()['access_token']}"}


def _club_board(client: TestClient, owner: Headers) -> str:
    club = client.post("/api/v1/clubs", json={"name": "Page Cache Club"}, headers=owner)
    assert club.status_code == 201, club.text
    return f"/api/v1/leaderboards/club:{club.json()['id']}"


def _run(client: TestClient, who: Headers, profile: Profile, seed: int) -> dict[str, Any]:
    body = {"points": points(recent_track(profile, seed, 700))}
    r = client.post("/api/v1/runs", json=body, headers=who)
    assert r.status_code == 201, r.text
    run: dict[str, Any] = r.json()
    return run


def _me(client: TestClient, who: Headers) -> str:
    runner_id: str = client.get("/api/v1/me", headers=who).json()["id"]
    return runner_id


def _scores(page: dict[str, Any]) -> dict[str, float]:
    return {e["runner_id"]: e["score"] for e in page["entries"]}


def test_a_page_carries_an_etag_and_answers_304_while_unchanged(app: TestClient) -> None:
    ann = _sign_up(app, "ann")
    board = _club_board(app, ann)
    _run(app, ann, Profile.HONEST_RECREATIONAL, 41)

    first = app.get(board)
    assert first.status_code == 200
    tag = first.headers["etag"]
    assert tag.startswith('"') and tag.endswith('"')
    assert first.headers["cache-control"] == "no-cache"
    assert _scores(first.json()).keys() == {_me(app, ann)}

    for sent in (tag, f"W/{tag}", f'"old", {tag}', "*"):
        again = app.get(board, headers={"If-None-Match": sent})
        assert again.status_code == 304, sent
        assert again.content == b"" and again.headers["etag"] == tag

    other = app.get(board, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.json() == first.json()
    assert other.headers["etag"] == tag
    paged = app.get(board + "?limit=1&offset=1")
    assert paged.json()["entries"] == [] and paged.headers["etag"] != tag


def test_a_newly_ranked_run_shows_at_once_with_a_new_etag(app: TestClient) -> None:
    ann = _sign_up(app, "ann")
    board = _club_board(app, ann)
    _run(app, ann, Profile.HONEST_RECREATIONAL, 42)
    before = app.get(board)
    tag = before.headers["etag"]

    _run(app, ann, Profile.HONEST_RECREATIONAL, 43)  # ann's club total grows

    after = app.get(board, headers={"If-None-Match": tag})
    assert after.status_code == 200
    assert after.headers["etag"] != tag
    ann_id = _me(app, ann)
    assert _scores(after.json())[ann_id] > _scores(before.json())[ann_id]


def test_a_moderators_reversal_leaves_no_stale_page(
    app: TestClient, backend_settings: Settings
) -> None:
    create_user(backend_settings, "judge", "moderator")
    t = app.post("/api/v1/auth/token", data={"username": "judge", "password": "backwards!"})
    mod = {"Authorization": f"Bearer {t.json()['access_token']}"}
    ann = _sign_up(app, "ann")
    board = _club_board(app, ann)
    run = _run(app, ann, Profile.MOCK_LOCATION, 2)
    assert run["status"] == "review"
    ann_id = _me(app, ann)
    assert _scores(app.get(board).json()).get(ann_id, 0) == 0  # a run in review counts nothing

    approve = {"decision": "approve", "reason": "spotter confirmed the run"}
    assert app.post(f"/api/v1/runs/{run['id']}/review", json=approve, headers=mod).status_code < 300
    approved = app.get(board)
    assert _scores(approved.json())[ann_id] > 0

    reject = {"decision": "reject", "reason": "second look: mock location all along"}
    assert app.post(f"/api/v1/runs/{run['id']}/review", json=reject, headers=mod).status_code < 300
    rejected = app.get(board, headers={"If-None-Match": approved.headers["etag"]})
    assert rejected.status_code == 200
    assert _scores(rejected.json()).get(ann_id, 0) == 0


def test_a_deleted_accounts_handle_leaves_the_page_when_it_expires(app: TestClient) -> None:
    """Handles are not covered by the board's version: the page's lifetime bounds them."""
    cache = _hold_pages(app, ttl_s=1.0)
    ann = _sign_up(app, "ann")
    board = _club_board(app, ann)
    _run(app, ann, Profile.HONEST_RECREATIONAL, 44)
    assert [e["handle"] for e in app.get(board).json()["entries"]] == ["ann"]

    r = app.request("DELETE", "/api/v1/me", json={"password": "backwards!"}, headers=ann)
    assert r.status_code == 204, r.text

    real = cache.clock
    cache.clock = lambda: real() + 2.0  # the page has lived its second
    assert [e["handle"] for e in app.get(board).json()["entries"]] == [None]


def test_a_page_cached_by_one_server_follows_anothers_writes(
    settings: Settings, redis_url: str
) -> None:
    """Two servers on one database and one Redis: a run that the first ranks is on the second's
    next page, although the second cached the page for an hour (whichever of them applies the
    event: the projections run wherever their lock is free)."""
    shared = settings.model_copy(update={"redis_url": redis_url})
    with _client(shared) as one, _client(shared) as two:
        _hold_pages(one)
        _hold_pages(two)
        ann = _sign_up(one, "ann")
        board = _club_board(one, ann)
        _run(one, ann, Profile.HONEST_RECREATIONAL, 45)
        held = two.get(board)
        assert held.json()["total"] == 1

        _run(one, ann, Profile.HONEST_RECREATIONAL, 46)

        fresh = two.get(board, headers={"If-None-Match": held.headers["etag"]})
        assert fresh.status_code == 200
        ann_id = _me(one, ann)
        assert _scores(fresh.json())[ann_id] > _scores(held.json())[ann_id]
        assert one.get(board).headers["etag"] == fresh.headers["etag"]  # same bytes, same tag


def test_requests_that_miss_together_share_one_render() -> None:
    calls: list[int] = []

    async def scenario() -> list[bytes]:
        cache = PageCache()
        gate = asyncio.Event()

        async def render() -> bytes:
            calls.append(1)
            await gate.wait()
            return b"{}"

        waiting = [
            asyncio.ensure_future(cache.render(("xp:all", 100, 0), "v1", render)) for _ in range(5)
        ]
        await asyncio.sleep(0)
        gate.set()
        return [p.body for p in await asyncio.gather(*waiting)]

    assert asyncio.run(scenario()) == [b"{}"] * 5
    assert calls == [1]


def test_requests_during_a_version_check_wait_for_the_next_one() -> None:
    """A check that started before a request arrived may have missed a write the request must
    see: such requests share the next check instead, so three requests cost two reads."""
    started: list[asyncio.Event] = []
    release: list[asyncio.Event] = []

    async def scenario() -> list[int]:
        cache = PageCache()
        key = ("xp:all", 100, 0)

        async def read(held: CachedPage | None) -> BoardPage | None:
            started.append(asyncio.Event())
            release.append(asyncio.Event())
            n = len(started)
            started[-1].set()
            await release[n - 1].wait()
            return BoardPage(n, [], f"v{n}")

        async def until_started(n: int) -> None:
            for _ in range(100):  # bounded: a check starts within a few loop turns
                if len(started) == n:
                    return
                await asyncio.sleep(0)

        first = asyncio.ensure_future(cache.check(key, read))
        await until_started(1)
        later = [asyncio.ensure_future(cache.check(key, read)) for _ in range(2)]
        await until_started(2)
        assert len(started) == 1  # one check at a time
        release[0].set()
        results = [await first]
        await until_started(2)  # the second check starts as the first ends
        release[1].set()
        results += [await f for f in later]
        return [read_.total for _held, read_ in results if read_ is not None]

    assert asyncio.run(scenario()) == [1, 2, 2]
    assert len(started) == 2


def test_the_runners_around_one_runner(app: TestClient) -> None:
    ann = _sign_up(app, "ann")
    board = _club_board(app, ann)
    _run(app, ann, Profile.HONEST_RECREATIONAL, 47)
    ann_id = _me(app, ann)

    page = app.get(f"{board}/around/{ann_id}?radius=3").json()

    assert [e["runner_id"] for e in page["entries"]] == [ann_id]
    assert page["entries"][0]["handle"] == "ann" and page["offset"] == 0
    assert app.get(f"{board}/around/nobody").status_code == 404
