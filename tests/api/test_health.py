from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
import sqlalchemy.exc
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.app import create_app
from server.config import Settings
from server.errors import add_exception_handlers
from tests.api.conftest import assert_problem


def test_healthz_and_readyz_report_ok_with_a_request_id(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.json() == {"status": "ok"}
    assert len(r.headers["x-request-id"]) >= 16
    ready = client.get("/readyz", headers={"X-Request-ID": "abc-123"})
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}
    assert ready.headers["x-request-id"] == "abc-123"


def test_readyz_is_a_503_problem_when_redis_is_unreachable(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'r.db'}",
        redis_url="redis://127.0.0.1:1/0",  # nothing listens on port 1
        secret_key="x" * 40,
    )
    with TestClient(create_app(settings)) as client:
        body = assert_problem(client.get("/readyz"), 503, "not_ready")
        assert body["checks"]["database"] == "ok"  # type: ignore[index]
        assert body["checks"]["redis"].startswith("error")  # type: ignore[index]


def test_metrics_count_requests_by_route(client: TestClient) -> None:
    client.get("/healthz")
    text = client.get("/metrics").text
    assert "retrorun_http_requests_total" in text
    assert 'route="/healthz"' in text
    assert "retrorun_events_appended_total" in text
    assert "retrorun_ws_connections" in text


def test_unknown_route_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/api/v1/nope"), 404, "not_found")


def test_the_default_secret_is_refused_outside_debug_without_sqlite() -> None:
    settings = Settings(database_url="postgresql://u@127.0.0.1/db")
    with pytest.raises(RuntimeError, match="RETRORUN_SECRET_KEY"):
        create_app(settings)


def test_the_embedded_default_generates_and_keeps_a_secret(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'k.db'}")
    first = settings.resolved().secret_key
    assert first != "change-me" and len(first) >= 32
    assert settings.resolved().secret_key == first
    assert (tmp_path / "k.db.secret").exists()


def test_database_urls_get_the_async_driver() -> None:
    assert Settings(database_url="sqlite:///x.db").async_database_url == "sqlite+aiosqlite:///x.db"
    pg = Settings(database_url="postgresql://u:p@h:5432/db").async_database_url
    assert pg == "postgresql+asyncpg://u:p@h:5432/db"
    with pytest.raises(ValueError, match="unsupported"):
        _ = Settings(database_url="mysql://u@h/db").async_database_url


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        asyncpg.exceptions.ConnectionDoesNotExistError("the connection was closed"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("connection is closed")),
        sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("database is locked")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_database_that_is_down_or_restarting_is_a_503_problem_not_a_500(exc: Exception) -> None:
    app = FastAPI()
    add_exception_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise exc

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    body = assert_problem(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "1" and "retry" in body["detail"]
