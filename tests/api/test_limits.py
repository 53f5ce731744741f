"""Abuse limits: rate limits per address and per account, trusted proxies, security headers,
and tokens that must be refused (expired, forged, `alg: none`, revoked)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from fastapi.testclient import TestClient

from server import limits
from server.app import create_app
from server.config import Rate, Settings, parse_rate
from server.limits import TokenBuckets, client_key
from server.security import decode_token, issue_token
from tests.api.conftest import assert_problem

PASSWORD = "backwards!"


class FakeClock:
    """The limiter's clock, stepped by hand: no sleeping, no timing assumptions."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(limits, "clock", fake)
    return fake


@pytest.fixture
def limited(settings: Settings) -> Settings:
    """Tiny limits, so each trips within a few requests."""
    return settings.model_copy(
        update={
            "rate_limit_login": Rate(3, 60.0),
            "rate_limit_register": Rate(2, 60.0),
            "rate_limit_runs": Rate(2, 60.0),
            "rate_limit_default": Rate(1000, 1.0),
            "login_max_failures": 1000,
        }
    )


def _client(settings: Settings, peer: str = "testclient") -> TestClient:
    return TestClient(create_app(settings), raise_server_exceptions=False, client=(peer, 50000))


@pytest.fixture
def lc(limited: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with _client(limited) as c:
        yield c


def _login(c: TestClient, handle: str, password: str = PASSWORD, **headers: str) -> int:
    r = c.post(
        "/api/v1/auth/token", data={"username": handle, "password": password}, headers=headers
    )
    return int(r.status_code)


def _assert_limited(r: object, limit: str) -> int:
    body = assert_problem(r, 429, "rate_limited")
    assert body["limit"] == limit
    retry_after = r.headers["retry-after"]  # type: ignore[attr-defined]
    assert retry_after.isdigit() and int(retry_after) >= 1
    return int(retry_after)


# --- each limit trips, answers a problem with Retry-After, and recovers after the window


def test_login_limit_per_address_trips_and_recovers(lc: TestClient, clock: FakeClock) -> None:
    assert [_login(lc, f"ghost{i}", "wrong-password") for i in range(3)] == [401, 401, 401]
    r = lc.post("/api/v1/auth/token", data={"username": "ghost9", "password": "wrong-password"})
    retry_after = _assert_limited(r, "login")
    assert retry_after == 20  # 3 per 60 s: one token every 20 s
    clock.advance(retry_after - 1)
    assert _login(lc, "ghost9", "wrong-password") == 429
    clock.advance(1)
    assert _login(lc, "ghost9", "wrong-password") == 401
    assert _login(lc, "ghost9", "wrong-password") == 429


def test_registration_limit_per_address_trips_and_recovers(
    lc: TestClient, clock: FakeClock
) -> None:
    for handle in ("reg_a", "reg_b"):
        r = lc.post("/api/v1/auth/register", json={"handle": handle, "password": PASSWORD})
        assert r.status_code == 201
    r = lc.post("/api/v1/auth/register", json={"handle": "reg_c", "password": PASSWORD})
    _assert_limited(r, "register")
    assert lc.get("/healthz").status_code == 200  # other requests still pass
    clock.advance(30)
    r = lc.post("/api/v1/auth/register", json={"handle": "reg_c", "password": PASSWORD})
    assert r.status_code == 201


def _register_and_login(c: TestClient, handle: str) -> dict[str, str]:
    r = c.post("/api/v1/auth/register", json={"handle": handle, "password": PASSWORD})
    assert r.status_code == 201, r.text
    t = c.post("/api/v1/auth/token", data={"username": handle, "password": PASSWORD})
    assert t.status_code == 200, t.text
    return {"Authorization": f"Bearer {t.json()['access_token']}"}


def test_run_upload_limit_is_per_account(limited: Settings, clock: FakeClock) -> None:
    settings = limited.model_copy(update={"rate_limit_register": Rate(10, 60.0)})
    with _client(settings) as c:
        ana, ben = _register_and_login(c, "ana"), _register_and_login(c, "ben")
        # The bodies are invalid (422): an upload counts whatever its fate.
        assert [c.post("/api/v1/runs", json={}, headers=ana).status_code for _ in range(2)] == [
            422,
            422,
        ]
        _assert_limited(c.post("/api/v1/runs", json={}, headers=ana), "runs")
        # Same address, another account: its own bucket.
        assert c.post("/api/v1/runs", json={}, headers=ben).status_code == 422
        clock.advance(30)
        assert c.post("/api/v1/runs", json={}, headers=ana).status_code == 422


def test_a_forged_token_cannot_spend_another_accounts_upload_bucket(
    limited: Settings, clock: FakeClock
) -> None:
    with _client(limited) as c:
        ben = _register_and_login(c, "ben")
        ben_id = decode_token(limited.secret_key, ben["Authorization"][7:]).runner_id
        forged, _ = issue_token(
            "another-secret-key-0123456789abcdef", ben_id, 0, 3600, datetime.now(UTC)
        )
        as_ben = {"Authorization": f"Bearer {forged}"}
        statuses = [c.post("/api/v1/runs", json={}, headers=as_ben).status_code for _ in range(3)]
        assert statuses == [401, 401, 429]  # counted against the address, not Ben
        assert c.post("/api/v1/runs", json={}, headers=ben).status_code == 422


def test_the_default_limit_covers_every_request(limited: Settings, clock: FakeClock) -> None:
    settings = limited.model_copy(update={"rate_limit_default": Rate(4, 2.0)})
    with _client(settings) as c:
        assert [c.get("/healthz").status_code for _ in range(4)] == [200] * 4
        assert _assert_limited(c.get("/api/v1/challenges"), "default") == 1
        clock.advance(0.5)
        assert c.get("/healthz").status_code == 200


def test_limits_can_be_switched_off(settings: Settings, clock: FakeClock) -> None:
    off = settings.model_copy(
        update={"rate_limits_enabled": False, "rate_limit_default": Rate(1, 60.0)}
    )
    with _client(off) as c:
        assert {c.get("/healthz").status_code for _ in range(5)} == {200}


def test_rates_are_written_count_per_window() -> None:
    assert parse_rate("10/min") == Rate(10, 60.0)
    assert parse_rate("200/10s") == Rate(200, 10.0)
    assert parse_rate("3 / 0.5s") == Rate(3, 0.5)
    assert parse_rate("5/hour") == Rate(5, 3600.0)
    assert str(Rate(10, 60.0)) == "10/60s"
    for bad in ("ten/min", "0/min", "5/0s", "5/fortnight", ""):
        with pytest.raises(ValueError):
            parse_rate(bad)
    with pytest.raises(ValueError):
        Settings(rate_limit_login="often")
    with pytest.raises(ValueError):
        Settings(trusted_proxies=["not-an-address"])


def test_buckets_are_bounded_least_recently_used_first() -> None:
    buckets, rate = TokenBuckets(max_buckets=2), Rate(1, 60.0)
    buckets.take(("login", "a"), rate, 0.0)
    buckets.take(("login", "b"), rate, 0.0)
    buckets.take(("login", "c"), rate, 0.0)
    assert len(buckets) == 2
    assert buckets.wait_s(("login", "a"), rate, 0.0) == 0  # forgotten: a full bucket again
    assert buckets.wait_s(("login", "c"), rate, 0.0) == 60.0


# --- X-Forwarded-For: only from trusted proxies


def test_forwarded_for_is_ignored_from_an_untrusted_peer(
    limited: Settings, clock: FakeClock
) -> None:
    settings = limited.model_copy(update={"rate_limit_login": Rate(1, 60.0)})
    with _client(settings, peer="198.51.100.7") as c:
        assert _login(c, "ghost", "wrong-password", **{"X-Forwarded-For": "203.0.113.1"}) == 401
        # A new forged address each time does not buy a new bucket.
        assert _login(c, "ghost", "wrong-password", **{"X-Forwarded-For": "203.0.113.2"}) == 429


def test_forwarded_for_is_honoured_from_a_trusted_proxy(
    limited: Settings, clock: FakeClock
) -> None:
    settings = limited.model_copy(
        update={"rate_limit_login": Rate(1, 60.0), "trusted_proxies": ["127.0.0.1", "10.0.0.0/8"]}
    )
    with _client(settings, peer="127.0.0.1") as c:
        assert _login(c, "ghost", "wrong-password", **{"X-Forwarded-For": "203.0.113.1"}) == 401
        assert _login(c, "ghost", "wrong-password", **{"X-Forwarded-For": "203.0.113.1"}) == 429
        assert _login(c, "ghost", "wrong-password", **{"X-Forwarded-For": "203.0.113.2"}) == 401
        # A client's own (spoofed) entries sit left of what the proxies appended: ignored.
        spoofed = "192.0.2.99, 203.0.113.2, 10.1.2.3"
        assert _login(c, "ghost", "wrong-password", **{"X-Forwarded-For": spoofed}) == 429


def test_client_key_rules() -> None:
    trusted = limits._networks(["127.0.0.1", "10.0.0.0/8", "::1"])
    assert client_key("198.51.100.7", "203.0.113.1", []) == "198.51.100.7"
    assert client_key("198.51.100.7", "203.0.113.1", trusted) == "198.51.100.7"
    assert client_key("127.0.0.1", "203.0.113.1", trusted) == "203.0.113.1"
    assert client_key("127.0.0.1", "203.0.113.1:4711, 10.0.0.2", trusted) == "203.0.113.1"
    assert client_key("127.0.0.1", "10.0.0.3, 10.0.0.2", trusted) == "10.0.0.3"  # all proxies
    assert client_key("127.0.0.1", None, trusted) == "127.0.0.1"
    assert client_key("::1", "[2001:db8:1:2::5]:443", trusted) == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:2::7", None, []) == "2001:db8:1:2::/64"  # one host, one /64
    assert client_key("::ffff:198.51.100.7", None, []) == "198.51.100.7"
    assert client_key(None, None, []) == "unknown"


# --- security headers on every HTTP response


GENERIC = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def _assert_generic_headers(r: object) -> None:
    headers = r.headers  # type: ignore[attr-defined]
    for name, value in GENERIC.items():
        assert headers.get_list(name) == [value], (name, headers)


def test_security_headers_on_api_problem_and_limit_responses(
    limited: Settings, clock: FakeClock
) -> None:
    settings = limited.model_copy(update={"rate_limit_default": Rate(3, 60.0)})
    with _client(settings) as c:
        responses = [c.get("/healthz"), c.get("/api/v1/me"), c.get("/api/v1/nope")]
        responses.append(c.get("/healthz"))  # 429
        assert [r.status_code for r in responses] == [200, 401, 404, 429]
        for r in responses:
            _assert_generic_headers(r)
            assert "content-security-policy" not in r.headers  # only HTML has one (web.py)
            assert r.headers["x-request-id"]


def test_security_headers_on_oversized_bodies(client: TestClient) -> None:
    big = b"x" * (3 * 1024 * 1024)
    r = client.post(
        "/api/v1/auth/register", content=big, headers={"content-type": "application/json"}
    )
    assert_problem(r, 413, "payload_too_large")
    _assert_generic_headers(r)


def test_the_phone_clients_html_keeps_its_own_policy(client: TestClient) -> None:
    r = client.get("/")
    if r.status_code == 404:
        pytest.skip("the phone client's files are not installed")
    assert r.headers["content-type"].startswith("text/html")
    _assert_generic_headers(r)
    (csp,) = r.headers.get_list("content-security-policy")  # one policy, not two
    assert "default-src 'self'" in csp


# --- tokens the API must refuse (test_auth.py covers missing and malformed ones)


def _b64(doc: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


@pytest.fixture
def runner_token(client: TestClient, sign_up: Callable[..., dict[str, str]]) -> str:
    return sign_up("tok")["Authorization"][7:]


def _bad_tokens(settings: Settings, good: str) -> dict[str, str]:
    claims = decode_token(settings.secret_key, good)
    sub, gen = claims.runner_id, claims.generation
    now = datetime.now(UTC)
    expired, _ = issue_token(settings.secret_key, sub, gen, 60, now - timedelta(hours=1))
    other_key, _ = issue_token("not-the-servers-key-0123456789abcdef", sub, gen, 3600, now)
    payload = {"sub": sub, "jti": "x" * 32, "gen": gen, "exp": int(now.timestamp()) + 3600}
    hs512 = jwt.encode(payload, settings.secret_key, algorithm="HS512")
    alg_none = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."
    header, _, sig = good.split(".")
    tampered_body = _b64({**jwt.decode(good, options={"verify_signature": False}), "sub": "x"})
    old_generation, _ = issue_token(settings.secret_key, sub, gen - 1, 3600, now)
    return {
        "expired": expired,
        "signed with another key": other_key,
        "HS512 (algorithm not allowed)": hs512,
        "alg none": alg_none,
        "claims changed after signing": f"{header}.{tampered_body}.{sig}",
        "an older token generation": old_generation,
    }


@pytest.mark.filterwarnings("ignore:The HMAC key")  # HS512 with the test's short key
def test_expired_forged_and_alg_none_tokens_of_a_real_runner_are_refused(
    client: TestClient, settings: Settings, runner_token: str
) -> None:
    for name, token in _bad_tokens(settings, runner_token).items():
        headers = {"Authorization": f"Bearer {token}"}
        for r in (
            client.get("/api/v1/me", headers=headers),
            client.post("/api/v1/runs", json={}, headers=headers),
        ):
            body = assert_problem(r, 401, "invalid_token")
            assert r.headers["www-authenticate"] == "Bearer", name
            assert body["detail"], name
    good = {"Authorization": f"Bearer {runner_token}"}
    assert client.get("/api/v1/me", headers=good).status_code == 200


def test_a_revoked_token_is_refused_everywhere(client: TestClient, runner_token: str) -> None:
    headers = {"Authorization": f"Bearer {runner_token}"}
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert_problem(client.get("/api/v1/me", headers=headers), 401, "invalid_token")
    assert_problem(client.post("/api/v1/runs", json={}, headers=headers), 401, "invalid_token")
    assert_problem(client.get("/api/v1/me/export", headers=headers), 401, "invalid_token")
    assert_problem(client.post("/api/v1/auth/logout", headers=headers), 401, "invalid_token")
