"""Passwords (argon2id) and bearer tokens (JWT, HS256, with expiry, id and revocation)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
_ALGORITHM = "HS256"
#: A valid hash to verify against when the handle does not exist, so timing does not tell.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when the password matches; spends the same time when there is no account."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class TokenClaims:
    runner_id: str
    jti: str
    generation: int
    expires_at: datetime


class InvalidToken(Exception):
    """The token is malformed, forged, expired or uses a refused algorithm."""


def issue_token(
    secret: str, runner_id: str, generation: int, lifetime_s: int, now: datetime
) -> tuple[str, TokenClaims]:
    expires = now + timedelta(seconds=lifetime_s)
    claims = TokenClaims(runner_id, uuid.uuid4().hex, generation, expires)
    payload = {
        "sub": runner_id,
        "jti": claims.jti,
        "gen": generation,
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
    }
    return jwt.encode(payload, secret, algorithm=_ALGORITHM), claims


def decode_token(secret: str, token: str) -> TokenClaims:
    """Verify signature, algorithm (HS256 only: `alg: none` is refused) and expiry."""
    try:
        payload = jwt.decode(
            token, secret, algorithms=[_ALGORITHM], options={"require": ["sub", "jti", "exp"]}
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    return TokenClaims(
        runner_id=str(payload["sub"]),
        jti=str(payload["jti"]),
        generation=int(payload.get("gen", 0)),
        expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
    )
