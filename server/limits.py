"""Abuse limits: per-address and per-account rate limits, and security headers (pure ASGI).

The rate limiter is a token bucket per (limit, key), kept in this process: with several server
processes behind a load balancer each keeps its own buckets, so a client gets up to N times the
configured rate. A limiter shared through Redis is the later step for scale-out.

Limits by path class (numbers in `Settings`, written "COUNT/WINDOW"):

| class | requests | keyed by |
|---|---|---|
| login | `POST /api/v1/auth/token` | client address |
| register | `POST /api/v1/auth/register` | client address |
| runs | `POST /api/v1/runs` | account (the bearer token's `sub`), else address |
| default | every HTTP request, the three above included | client address |

Over a limit the answer is a 429 problem document with `Retry-After` (whole seconds). The client
address is the socket peer; `X-Forwarded-For` counts only when the peer is a trusted proxy
(`trusted_proxies`), read right to left up to the first address that is not one. IPv6 clients are
keyed by their /64 (one host usually holds a whole /64). The account of a run upload comes from
a token whose signature is verified (no database access, no revocation check): a forged token
cannot spend another runner's bucket.

Every HTTP response gets `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and
`X-Frame-Options: DENY` unless it set them itself. The `Content-Security-Policy` of HTML is left
to whoever serves it: the phone client's (self only) is set by `server/web.py`.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import metrics
from server.config import Rate, Settings
from server.errors import problem
from server.security import InvalidToken, decode_token

#: The limiter's clock (monotonic seconds); tests replace it to step time without sleeping.
clock = time.monotonic

#: Added to every HTTP response that does not carry them already.
SECURITY_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

LOGIN_PATH = "/api/v1/auth/token"
REGISTER_PATH = "/api/v1/auth/register"
RUNS_PATH = "/api/v1/runs"
#: Buckets kept at most; the least recently used go first (a fresh bucket is a full one).
MAX_BUCKETS = 100_000

_ENCODED = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


class TokenBuckets:
    """Token buckets by key, in memory, least recently used evicted beyond `max_buckets`."""

    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, key: tuple[str, str], rate: Rate, now: float) -> float:
        tokens, updated = self._buckets.get(key, (float(rate.limit), now))
        return min(float(rate.limit), tokens + max(0.0, now - updated) * rate.per_second)

    def wait_s(self, key: tuple[str, str], rate: Rate, now: float) -> float:
        """Seconds until one token is there (0 when one is there now)."""
        level = self._level(key, rate, now)
        return 0.0 if level >= 1.0 else (1.0 - level) / rate.per_second

    def take(self, key: tuple[str, str], rate: Rate, now: float) -> None:
        """Spend one token (the caller checked `wait_s` first)."""
        self._buckets[key] = (self._level(key, rate, now) - 1.0, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)


def _networks(items: Iterable[str]) -> list[IPv4Network | IPv6Network]:
    return [ip_network(item, strict=False) for item in items]


def _parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    """The address (IPv4-mapped IPv6 unwrapped), or None if `text` is not one."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.split(":", 1)[0]
    try:
        addr = ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def client_key(
    peer: str | None, forwarded_for: str | None, trusted: list[IPv4Network | IPv6Network]
) -> str:
    """The client address the limits count against (see the module doc)."""
    candidate = peer or "unknown"
    if forwarded_for and trusted and _is_trusted(peer, trusted):
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            candidate = hop
            if not _is_trusted(hop, trusted):
                break
    addr = _parse_ip(candidate)
    if addr is None:
        return candidate[:64]  # not an address (a test client, a malformed hop): keyed as is
    if isinstance(addr, IPv6Address):
        return str(ip_network((addr, 64), strict=False))
    return str(addr)


def _is_trusted(addr: str | None, trusted: list[IPv4Network | IPv6Network]) -> bool:
    ip = _parse_ip(addr or "")
    return ip is not None and any(ip in net for net in trusted)


def _header(scope: Scope, name: bytes) -> str | None:
    values = [v.decode("latin-1") for k, v in scope.get("headers") or () if k == name]
    return ", ".join(values) if values else None


class AbuseLimitsMiddleware:
    """Rate limits by path class and security headers on every HTTP response."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.trusted = _networks(settings.trusted_proxies)
        self.buckets = TokenBuckets()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_security_headers(list(message.get("headers") or []))
            await send(message)

        if self.settings.rate_limits_enabled:
            refused = self._check(scope)
            if refused is not None:
                limit, wait_s = refused
                metrics.RATE_LIMITED.labels(limit).inc()
                retry_after = str(max(1, math.ceil(wait_s)))
                response = problem(
                    429,
                    "rate_limited",
                    f"too many requests ({limit}): retry after {retry_after} s",
                    headers={"Retry-After": retry_after},
                    limit=limit,
                )
                await response(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)

    def _check(self, scope: Scope) -> tuple[str, float] | None:
        """Spend a token from each bucket this request counts against, or say which is empty."""
        s = self.settings
        client = scope.get("client")
        address = client_key(
            client[0] if client else None, _header(scope, b"x-forwarded-for"), self.trusted
        )
        checks: list[tuple[str, str, Rate]] = [("default", address, s.rate_limit_default)]
        if scope["method"] == "POST":
            path = scope["path"].rstrip("/")
            if path == LOGIN_PATH:
                checks.append(("login", address, s.rate_limit_login))
            elif path == REGISTER_PATH:
                checks.append(("register", address, s.rate_limit_register))
            elif path == RUNS_PATH:
                checks.append(("runs", self._account(scope) or address, s.rate_limit_runs))
        now = clock()
        waits = [(name, self.buckets.wait_s((name, key), rate, now)) for name, key, rate in checks]
        worst = max(waits, key=lambda w: w[1])
        if worst[1] > 0:
            return worst
        for name, key, rate in checks:
            self.buckets.take((name, key), rate, now)
        return None

    def _account(self, scope: Scope) -> str | None:
        """`account:<sub>` of a validly signed, unexpired bearer token (no database access)."""
        auth = _header(scope, b"authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            return "account:" + decode_token(self.settings.secret_key, token.strip()).runner_id
        except InvalidToken:
            return None


def _with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    present = {k.lower() for k, _ in headers}
    return headers + [(k, v) for k, v in _ENCODED if k not in present]
