"""Accounts: register, sign in, sign out, and who am I."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field

from server import accounts
from server.deps import CurrentRunner, SettingsDep, TokenDep, WriteSessionDep
from server.errors import ApiError, problem_responses
from server.security import InvalidToken, decode_token
from server.store.tables import Runner

router = APIRouter(tags=["accounts"])


class RunnerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handle: str = Field(min_length=3, max_length=32, examples=["backpedal_bo"])
    password: str = Field(min_length=accounts.PASSWORD_MIN, max_length=accounts.PASSWORD_MAX)


class RunnerPublic(BaseModel):
    id: str
    handle: str
    role: str
    created_at: datetime


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


def _public(runner: Runner) -> RunnerPublic:
    return RunnerPublic(
        id=runner.id, handle=runner.handle, role=runner.role, created_at=runner.created_at
    )


@router.post("/auth/register", status_code=status.HTTP_201_CREATED, response_model=RunnerPublic)
async def register(body: RunnerCreate, session: WriteSessionDep) -> RunnerPublic:
    """Create a runner account. Handles are unique regardless of case."""
    runner = await accounts.register(session, body.handle, body.password, datetime.now(UTC))
    await session.commit()
    return _public(runner)


@router.post("/auth/token", response_model=Token, responses=problem_responses(401))
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: WriteSessionDep,
    settings: SettingsDep,
) -> Token:
    """Sign in with handle (`username`) and password; returns a bearer token."""
    try:
        access_token, _runner = await accounts.login(
            session, settings, form.username, form.password, datetime.now(UTC)
        )
    finally:
        await session.commit()  # failed attempts count toward the throttle
    return Token(access_token=access_token, expires_in=settings.token_lifetime_s)


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    runner: CurrentRunner, token: TokenDep, session: WriteSessionDep, settings: SettingsDep
) -> None:
    """Revoke the token this request carries."""
    try:
        claims = decode_token(settings.secret_key, token or "")
    except InvalidToken as exc:  # pragma: no cover - CurrentRunner already checked it
        raise ApiError(401, "invalid_token", "the token is invalid") from exc
    await accounts.revoke(session, claims, datetime.now(UTC))
    await session.commit()


@router.get("/me", response_model=RunnerPublic)
async def me(runner: CurrentRunner) -> RunnerPublic:
    """The signed-in runner."""
    return _public(runner)
