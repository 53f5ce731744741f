"""Accounts: registration, password login with throttling, token checks. Never commits."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from game.errors import Conflict, DomainError, InvalidCommand
from server.config import Settings
from server.security import TokenClaims, hash_password, issue_token, verify_password
from server.store.tables import RevokedToken, Runner

HANDLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$")
PASSWORD_MIN, PASSWORD_MAX = 8, 128


class Role(StrEnum):
    RUNNER = "runner"
    MODERATOR = "moderator"
    ADMIN = "admin"


class InvalidCredentials(DomainError):
    code = "invalid_credentials"


class LoginThrottled(DomainError):
    code = "login_throttled"


def validate_handle(handle: str) -> str:
    if not HANDLE_RE.fullmatch(handle):
        raise InvalidCommand(
            "a handle is 3 to 32 characters: letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return handle


def validate_password(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidCommand(f"a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password


async def find_by_handle(session: AsyncSession, handle: str) -> Runner | None:
    result = await session.exec(select(Runner).where(Runner.handle_key == handle.casefold()))
    return result.first()


async def register(
    session: AsyncSession, handle: str, password: str, now: datetime, role: Role = Role.RUNNER
) -> Runner:
    """Create an account; handles are unique regardless of case."""
    validate_handle(handle)
    validate_password(password)
    if await find_by_handle(session, handle) is not None:
        raise Conflict(f"the handle {handle!r} is taken", code="handle_taken")
    runner = Runner(
        id=str(uuid.uuid4()),
        handle=handle,
        handle_key=handle.casefold(),
        password_hash=await asyncio.to_thread(hash_password, password),
        role=role.value,
        created_at=now,
    )
    session.add(runner)
    await session.flush()
    return runner


async def login(
    session: AsyncSession, settings: Settings, handle: str, password: str, now: datetime
) -> tuple[str, Runner]:
    """Check a password and issue a bearer token; repeated failures lock the handle briefly."""
    runner = await find_by_handle(session, handle)
    if runner is not None and runner.locked_until is not None:
        locked_until = _aware(runner.locked_until)
        if locked_until > now:
            wait_s = int((locked_until - now).total_seconds()) + 1
            raise LoginThrottled(f"too many failed sign-ins: try again in {wait_s} s")
    # argon2 is deliberately slow: keep it off the event loop
    ok = await asyncio.to_thread(
        verify_password, runner.password_hash if runner else None, password
    )
    if runner is None or not ok:
        if runner is not None:
            runner.failed_logins += 1
            if runner.failed_logins >= settings.login_max_failures:
                runner.locked_until = now + timedelta(seconds=settings.login_lockout_s)
                runner.failed_logins = 0
            session.add(runner)
        raise InvalidCredentials("unknown handle or wrong password")
    if runner.banned:
        raise DomainError("this account is banned", code="banned")
    runner.failed_logins = 0
    runner.locked_until = None
    session.add(runner)
    token, _claims = issue_token(
        settings.secret_key, runner.id, runner.token_generation, settings.token_lifetime_s, now
    )
    return token, runner


async def runner_for_token(
    session: AsyncSession, claims: TokenClaims, now: datetime
) -> Runner | None:
    """The runner a valid token names, or None when it was revoked."""
    runner = await session.get(Runner, claims.runner_id)
    if runner is None or runner.token_generation != claims.generation:
        return None
    if await session.get(RevokedToken, claims.jti) is not None:
        return None
    return runner


async def revoke(session: AsyncSession, claims: TokenClaims, now: datetime) -> None:
    """Log a token out before it expires (and forget long-expired revocations)."""
    stale = delete(RevokedToken).where(RevokedToken.__table__.c.expires_at < now)  # type: ignore[attr-defined]
    await session.exec(stale)
    if await session.get(RevokedToken, claims.jti) is None:
        session.add(RevokedToken(jti=claims.jti, expires_at=claims.expires_at))


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
