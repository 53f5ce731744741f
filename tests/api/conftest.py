"""API tests drive the real app (lifespan included) on a fresh SQLite file per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.config import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        secret_key="test-secret-key-long-enough-for-hs256-0123456789",
        log_json=False,
        login_max_failures=3,
        login_lockout_s=60,
        max_body_bytes=2 * 1024 * 1024,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def sign_up(client: TestClient) -> Callable[..., dict[str, str]]:
    """Register a runner and return auth headers for them."""

    def make(handle: str = "bo", password: str = "backwards!") -> dict[str, str]:
        r = client.post("/api/v1/auth/register", json={"handle": handle, "password": password})
        assert r.status_code == 201, r.text
        t = client.post("/api/v1/auth/token", data={"username": handle, "password": password})
        assert t.status_code == 200, t.text
        return {"Authorization": f"Bearer {t.json()['access_token']}"}

    return make


def assert_problem(response: object, status: int, code: str | None = None) -> dict[str, object]:
    """The response is an RFC 9457 problem document with this status (and code)."""
    r = response  # httpx.Response
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    body: dict[str, object] = r.json()  # type: ignore[attr-defined]
    assert {"type", "title", "status", "detail", "code"} <= body.keys()
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body
