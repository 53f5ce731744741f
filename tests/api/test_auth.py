from __future__ import annotations

import base64
from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.api.conftest import assert_problem


def test_register_sign_in_and_me(
    client: TestClient, sign_up: Callable[..., dict[str, str]]
) -> None:
    headers = sign_up("Retro_Rita")
    me = client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200
    assert me.json()["handle"] == "Retro_Rita"
    assert me.json()["role"] == "runner"
    assert "password_hash" not in me.json()


def test_handles_are_unique_regardless_of_case(
    client: TestClient, sign_up: Callable[..., dict[str, str]]
) -> None:
    sign_up("Rita")
    r = client.post("/api/v1/auth/register", json={"handle": "rITA", "password": "backwards!"})
    assert_problem(r, 409, "handle_taken")


def test_bad_handles_and_passwords_are_refused(client: TestClient) -> None:
    for handle in ("ab", "has space", "_leading", "x" * 33, "émile"):
        r = client.post("/api/v1/auth/register", json={"handle": handle, "password": "backwards!"})
        assert_problem(r, 422, "invalid")
    r = client.post("/api/v1/auth/register", json={"handle": "okname", "password": "short"})
    assert_problem(r, 422, "invalid")


def test_request_bodies_cannot_set_role_or_unknown_fields(client: TestClient) -> None:
    r = client.post(
        "/api/v1/auth/register",
        json={"handle": "sneaky", "password": "backwards!", "role": "admin"},
    )
    body = assert_problem(r, 422, "invalid")
    assert "role" in str(body["detail"])


def test_wrong_password_then_throttling(
    client: TestClient, sign_up: Callable[..., dict[str, str]]
) -> None:
    sign_up("tara")
    for _ in range(3):
        r = client.post("/api/v1/auth/token", data={"username": "tara", "password": "wrong-one!"})
        assert_problem(r, 401, "invalid_credentials")
    r = client.post("/api/v1/auth/token", data={"username": "tara", "password": "backwards!"})
    assert_problem(r, 429, "login_throttled")
    unknown = client.post("/api/v1/auth/token", data={"username": "ghost", "password": "whatever!"})
    assert_problem(unknown, 401, "invalid_credentials")


def test_logout_revokes_the_token(
    client: TestClient, sign_up: Callable[..., dict[str, str]]
) -> None:
    headers = sign_up("lou")
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert_problem(client.get("/api/v1/me", headers=headers), 401, "invalid_token")


def test_missing_forged_and_alg_none_tokens_are_refused(client: TestClient) -> None:
    assert_problem(client.get("/api/v1/me"), 401, "unauthorized")
    forged = {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"}
    assert_problem(client.get("/api/v1/me", headers=forged), 401, "invalid_token")
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    claims = base64.urlsafe_b64encode(b'{"sub":"x","jti":"1","exp":9999999999}').rstrip(b"=")
    none_alg = {"Authorization": f"Bearer {header}.{claims.decode()}."}
    assert_problem(client.get("/api/v1/me", headers=none_alg), 401, "invalid_token")


def test_expired_tokens_are_refused(
    client: TestClient, sign_up: Callable[..., dict[str, str]]
) -> None:
    import jwt

    sign_up("exp")
    secret = client.app.state.settings.secret_key  # type: ignore[attr-defined]
    token = jwt.encode({"sub": "x", "jti": "j", "exp": 1_000_000}, secret, algorithm="HS256")
    r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert_problem(r, 401, "invalid_token")


def test_malformed_json_wrong_types_and_oversized_bodies_are_problems(client: TestClient) -> None:
    r = client.post(
        "/api/v1/auth/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(r, 422, "invalid")
    r = client.post("/api/v1/auth/register", json={"handle": 12, "password": ["x"]})
    assert_problem(r, 422, "invalid")
    r = client.post("/api/v1/auth/register", json=[1, 2, 3])
    assert_problem(r, 422, "invalid")
    big = b'{"handle": "' + b"a" * (3 * 1024 * 1024) + b'", "password": "backwards!"}'
    r = client.post(
        "/api/v1/auth/register", content=big, headers={"content-type": "application/json"}
    )
    assert_problem(r, 413, "payload_too_large")
