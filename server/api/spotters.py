"""Spotters: pair a safety partner with your account, or share a revocable live-follow link.

A spotter follows a runner's live races (`WS /ws/rooms/{race id}`, role `spotter`) and gets an
`alert` when the runner stops suddenly or makes no progress (docs/protocol.md, "Spotters and
safety alerts"). Pairings and links are account data, not events: deleting an account deletes
them. A share link's token is shown once, at creation; only its SHA-256 is stored.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert, select, update

from server.accounts import find_by_handle
from server.deps import CurrentRunner, EngineDep, EventStoreDep, SessionDep
from server.errors import ApiError, problem_responses
from server.rooms.backplane.base import Outbound
from server.rooms.protocol import error
from server.spotters import (
    LINK_PREFIX,
    LINKS,
    PAIRINGS,
    followable_races,
    new_token,
    resolve_link,
    token_hash,
)
from server.store.db import writer
from server.store.tables import Runner

router = APIRouter(prefix="/spotters", tags=["spotters"])
RUNNERS = Runner.__table__  # type: ignore[attr-defined]
AccountId = Annotated[str, Path(max_length=36, pattern=r"^[A-Za-z0-9_-]+$")]
LinkId = Annotated[str, Path(max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
Token = Annotated[str, Path(min_length=16, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
#: Close code for a share-link socket once its link is revoked (do not reconnect).
LINK_REVOKED_CLOSE = 4511
MAX_LINKS = 20


class InviteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    handle: str = Field(min_length=3, max_length=32, description="the spotter's handle")


class Pairing(BaseModel):
    runner_id: str = Field(description="the runner being spotted")
    spotter_id: str
    status: str = Field(description="invited or accepted")
    created_at: datetime
    accepted_at: datetime | None


class NamedPairing(Pairing):
    runner_handle: str | None
    spotter_handle: str | None


class Pairings(BaseModel):
    spotters: list[NamedPairing] = Field(description="your spotters (you are the runner)")
    spotting: list[NamedPairing] = Field(description="runners you spot, or who invited you")


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(default="", max_length=60, examples=["Mum"])
    expires_in_s: int = Field(
        default=24 * 3600, ge=60, le=30 * 24 * 3600, description="lifetime (default one day)"
    )


class LinkPublic(BaseModel):
    id: str
    label: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    active: bool


class LinkCreated(LinkPublic):
    token: str = Field(description="shown once: the share token (store it, it cannot be read back)")
    watch_url: str = Field(description="GET it to see what the link follows")


class WatchRace(BaseModel):
    id: str
    title: str
    status: str
    scheduled_at: float = Field(description="Unix seconds")
    start_at: float | None = Field(description="Unix seconds: the gun, once the countdown started")
    room: str = Field(description="WebSocket path: connect, then send auth {share_token}")


class Watch(BaseModel):
    runner_id: str
    handle: str | None
    expires_at: datetime
    races: list[WatchRace] = Field(description="the runner's upcoming and live races")


def _pairing(row: object) -> Pairing:
    m = row._mapping  # type: ignore[attr-defined]
    return Pairing(
        runner_id=m["runner_id"],
        spotter_id=m["spotter_id"],
        status=m["status"],
        created_at=_utc(m["created_at"]),
        accepted_at=_utc(m["accepted_at"]) if m["accepted_at"] is not None else None,
    )


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _link(row: object, now: datetime) -> LinkPublic:
    m = row._mapping  # type: ignore[attr-defined]
    expires = _utc(m["expires_at"])
    revoked = _utc(m["revoked_at"]) if m["revoked_at"] is not None else None
    return LinkPublic(
        id=m["id"],
        label=m["label"],
        created_at=_utc(m["created_at"]),
        expires_at=expires,
        revoked_at=revoked,
        active=revoked is None and expires > now,
    )


@router.post(
    "/invites",
    status_code=status.HTTP_201_CREATED,
    response_model=Pairing,
    responses=problem_responses(404),
)
async def invite(
    body: InviteIn, runner: CurrentRunner, session: SessionDep, engine: EngineDep
) -> Pairing:
    """Ask another account (by handle) to be your spotter; they accept with
    `POST /api/v1/spotters/invites/{your id}/accept`."""
    spotter = await find_by_handle(session, body.handle)
    if spotter is None or spotter.banned:
        raise ApiError(404, "not_found", f"no runner {body.handle!r}")
    if spotter.id == runner.id:
        raise ApiError(422, "invalid", "you cannot spot yourself")
    now = datetime.now(UTC)
    async with engine.connect() as raw:
        conn = await writer(raw)
        async with conn.begin():
            key = (PAIRINGS.c.runner_id == runner.id, PAIRINGS.c.spotter_id == spotter.id)
            existing = (await conn.execute(select(PAIRINGS).where(*key))).first()
            if existing is not None:
                state = existing._mapping["status"]
                raise ApiError(409, f"already_{state}", f"{body.handle!r} is already {state}")
            values = {
                "runner_id": runner.id,
                "spotter_id": spotter.id,
                "status": "invited",
                "created_at": now,
                "accepted_at": None,
            }
            await conn.execute(insert(PAIRINGS).values(**values))
    return Pairing(**values)


@router.post("/invites/{runner_id}/accept", response_model=Pairing)
async def accept(runner_id: AccountId, runner: CurrentRunner, engine: EngineDep) -> Pairing:
    """Accept a runner's invitation: you become their spotter."""
    now = datetime.now(UTC)
    async with engine.connect() as raw:
        conn = await writer(raw)
        async with conn.begin():
            key = (PAIRINGS.c.runner_id == runner_id, PAIRINGS.c.spotter_id == runner.id)
            row = (await conn.execute(select(PAIRINGS).where(*key))).first()
            if row is None:
                raise ApiError(404, "not_found", "no invitation from that runner")
            if row._mapping["status"] == "accepted":
                raise ApiError(409, "already_accepted", "you already spot that runner")
            await conn.execute(
                update(PAIRINGS).where(*key).values(status="accepted", accepted_at=now)
            )
            row = (await conn.execute(select(PAIRINGS).where(*key))).first()
    return _pairing(row)


@router.get("", response_model=Pairings)
async def list_pairings(runner: CurrentRunner, engine: EngineDep) -> Pairings:
    """Your spotters, and the runners you spot (or who invited you)."""
    async with engine.connect() as conn:
        mine = (await conn.execute(select(PAIRINGS).where(PAIRINGS.c.runner_id == runner.id))).all()
        theirs = (
            await conn.execute(select(PAIRINGS).where(PAIRINGS.c.spotter_id == runner.id))
        ).all()
        # Both sides of a pairing know each other: name them, so a client need not show ids.
        ids = {r.spotter_id for r in mine} | {r.runner_id for r in theirs} | {runner.id}
        stmt = select(RUNNERS.c.id, RUNNERS.c.handle).where(RUNNERS.c.id.in_(ids))
        handles = {rid: handle for rid, handle in (await conn.execute(stmt)).all()}

    def named(row: object) -> NamedPairing:
        p = _pairing(row)
        return NamedPairing(
            **p.model_dump(),
            runner_handle=handles.get(p.runner_id),
            spotter_handle=handles.get(p.spotter_id),
        )

    return Pairings(spotters=[named(r) for r in mine], spotting=[named(r) for r in theirs])


@router.delete("/pairings/{other_id}", status_code=status.HTTP_204_NO_CONTENT)
async def unpair(other_id: AccountId, runner: CurrentRunner, engine: EngineDep) -> None:
    """End a pairing (or decline or withdraw an invitation), from either side."""
    async with engine.connect() as raw:
        conn = await writer(raw)
        async with conn.begin():
            result = await conn.execute(
                PAIRINGS.delete().where(
                    ((PAIRINGS.c.runner_id == runner.id) & (PAIRINGS.c.spotter_id == other_id))
                    | ((PAIRINGS.c.runner_id == other_id) & (PAIRINGS.c.spotter_id == runner.id))
                )
            )
    if not result.rowcount:
        raise ApiError(404, "not_found", "no pairing with that account")


@router.post("/links", status_code=status.HTTP_201_CREATED, response_model=LinkCreated)
async def create_link(body: LinkIn, runner: CurrentRunner, engine: EngineDep) -> LinkCreated:
    """A share link for someone without an account: they follow your races live as a spotter
    (`auth {share_token}` in the room) until it expires or you revoke it. The token is shown
    only now."""
    now = datetime.now(UTC)
    token = new_token()
    link_id = uuid.uuid4().hex[:16]
    values = {
        "id": link_id,
        "runner_id": runner.id,
        "token_hash": token_hash(token),
        "label": body.label.strip(),
        "created_at": now,
        "expires_at": now + timedelta(seconds=body.expires_in_s),
        "revoked_at": None,
    }
    async with engine.connect() as raw:
        conn = await writer(raw)
        async with conn.begin():
            active = (
                await conn.execute(
                    select(LINKS.c.id).where(
                        LINKS.c.runner_id == runner.id,
                        LINKS.c.revoked_at.is_(None),
                        LINKS.c.expires_at > now,
                    )
                )
            ).all()
            if len(active) >= MAX_LINKS:
                raise ApiError(409, "too_many_links", f"at most {MAX_LINKS} active links")
            await conn.execute(insert(LINKS).values(**values))
    return LinkCreated(
        id=link_id,
        label=values["label"],
        created_at=now,
        expires_at=values["expires_at"],
        revoked_at=None,
        active=True,
        token=token,
        watch_url=f"/api/v1/spotters/watch/{token}",
    )


@router.get("/links", response_model=list[LinkPublic])
async def list_links(runner: CurrentRunner, engine: EngineDep) -> list[LinkPublic]:
    """Your share links, newest first (tokens are never shown again)."""
    now = datetime.now(UTC)
    stmt = (
        select(LINKS)
        .where(LINKS.c.runner_id == runner.id)
        .order_by(LINKS.c.created_at.desc(), LINKS.c.id)
    )
    async with engine.connect() as conn:
        return [_link(r, now) for r in (await conn.execute(stmt)).all()]


@router.delete("/links/{link_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_link(
    link_id: LinkId,
    runner: CurrentRunner,
    engine: EngineDep,
    store: EventStoreDep,
    request: Request,
) -> None:
    """Revoke a share link: it stops working at once, and sockets following with it are
    closed (4511). Revoking twice is fine."""
    now = datetime.now(UTC)
    async with engine.connect() as raw:
        conn = await writer(raw)
        async with conn.begin():
            key = (LINKS.c.id == link_id, LINKS.c.runner_id == runner.id)
            row = (await conn.execute(select(LINKS.c.revoked_at).where(*key))).first()
            if row is None:
                raise ApiError(404, "not_found", f"no link {link_id!r}")
            if row.revoked_at is None:
                await conn.execute(update(LINKS).where(*key).values(revoked_at=now))
    rooms = getattr(request.state, "rooms", None)
    if rooms is None:
        return
    who = LINK_PREFIX + link_id
    notice = error("share_link_revoked", "the runner revoked this share link")
    for race in await followable_races(engine, store, runner.id, now.timestamp()):
        with contextlib.suppress(Exception):  # best effort: the auth check is the guarantee
            await rooms.backplane.publish(
                race["id"], Outbound("direct", notice, audience="runner", to=who)
            )
            await rooms.backplane.publish(
                race["id"],
                Outbound("close", "", audience="runner", to=who, close_code=LINK_REVOKED_CLOSE),
            )


@router.get("/watch/{token}", response_model=Watch)
async def watch(token: Token, engine: EngineDep, store: EventStoreDep) -> Watch:
    """What a share link follows (no account needed): the runner and their upcoming and live
    races. 404 `invalid_share_link` once the link is revoked or expired."""
    now = datetime.now(UTC)
    grant = await resolve_link(engine, token, now)
    if grant is None:
        raise ApiError(404, "invalid_share_link", "this share link is unknown, revoked or expired")
    async with engine.connect() as conn:
        handle = (
            await conn.execute(select(RUNNERS.c.handle).where(RUNNERS.c.id == grant.runner_id))
        ).scalar_one_or_none()
        expires = (
            await conn.execute(select(LINKS.c.expires_at).where(LINKS.c.id == grant.link_id))
        ).scalar_one()
    races = await followable_races(engine, store, grant.runner_id, now.timestamp())
    return Watch(
        runner_id=grant.runner_id,
        handle=handle,
        expires_at=_utc(expires),
        races=[WatchRace(**r) for r in races],
    )
