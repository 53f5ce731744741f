"""Clubs: create, join by code, invitations (yours listed), roles, calendar (JSON, iCalendar)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from game import clubs as club_decider
from server.accounts import find_by_handle
from server.authz import club_state
from server.commands import execute
from server.deps import (
    CurrentRunner,
    EngineDep,
    EventStoreDep,
    ProjectionsDep,
    SessionDep,
    SettingsDep,
)
from server.errors import ApiError, problem_responses
from server.store.club_projection import CLUB_MEMBERS, CLUBS
from server.store.progress import CHALLENGES
from server.store.race_projection import RACES
from server.store.tables import Runner

RUNNERS = Runner.__table__  # type: ignore[attr-defined]

router = APIRouter(prefix="/clubs", tags=["clubs"])
ClubId = Annotated[str, Path(max_length=36, pattern=r"^[A-Za-z0-9_-]+$")]


class ClubCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=3, max_length=60, examples=["Reverse Rovers"])


class JoinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=4, max_length=32)


class InviteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    handle: str = Field(min_length=3, max_length=32)


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: club_decider.Role


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runner_id: str = Field(max_length=36)


class Member(BaseModel):
    runner_id: str
    role: str


class ClubPublic(BaseModel):
    id: str
    name: str
    owner_id: str
    members: int
    your_role: str | None = None
    join_code: str | None = Field(default=None, description="shown to club admins only")
    calendar_url: str | None = Field(default=None, description="iCalendar feed, shown to members")
    member_list: list[Member] | None = Field(default=None, description="shown to members only")


class Invitation(BaseModel):
    club_id: str
    club_name: str
    members: int
    invited_by: str | None = Field(description="the runner id of the admin who invited you")
    invited_by_handle: str | None
    invited_at: datetime | None = Field(
        description="null for invitations sent before it was recorded"
    )


class CalendarItem(BaseModel):
    kind: str = Field(description="race or challenge")
    id: str
    title: str
    starts_at: datetime
    ends_at: datetime | None


def _calendar_key(secret: str, club_id: str) -> str:
    return hmac.new(secret.encode(), f"calendar:{club_id}".encode(), hashlib.sha256).hexdigest()[
        :32
    ]


_state = club_state


def _public(s: club_decider.ClubState, runner_id: str, secret: str) -> ClubPublic:
    role = s.role_of(runner_id)
    owner = next(r for r, role_ in s.roles.items() if role_ == club_decider.Role.OWNER)
    out = ClubPublic(id=s.club_id, name=s.name, owner_id=owner, members=len(s.roles))
    if role is not None:
        out.your_role = role.value
        out.member_list = [Member(runner_id=r, role=v.value) for r, v in sorted(s.roles.items())]
        key = _calendar_key(secret, s.club_id)
        out.calendar_url = f"/api/v1/clubs/{s.club_id}/calendar.ics?key={key}"
        if s.is_admin(runner_id):
            out.join_code = s.join_code
    return out


async def _do(
    store: EventStoreDep, projections: ProjectionsDep, club_id: str, command: Any, actor: str
) -> club_decider.ClubState:
    outcome = await execute(store, f"club-{club_id}", club_decider, command, meta={"actor": actor})
    await projections.run_once()
    state: club_decider.ClubState = outcome.state
    return state


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ClubPublic)
async def create_club(
    body: ClubCreate,
    runner: CurrentRunner,
    store: EventStoreDep,
    projections: ProjectionsDep,
    settings: SettingsDep,
) -> ClubPublic:
    """Create a club; you are its owner. Share the join code with your members."""
    club_id = uuid.uuid4().hex[:12]
    code = secrets.token_urlsafe(6)
    cmd = club_decider.CreateClub(club_id, body.name, runner.id, code)
    state = await _do(store, projections, club_id, cmd, runner.id)
    return _public(state, runner.id, settings.secret_key)


@router.get("/mine", response_model=list[ClubPublic])
async def my_clubs(runner: CurrentRunner, engine: EngineDep) -> list[ClubPublic]:
    """The clubs you belong to."""
    stmt = (
        select(CLUBS, CLUB_MEMBERS.c.role)
        .join(CLUB_MEMBERS, CLUB_MEMBERS.c.club_id == CLUBS.c.id)
        .where(CLUB_MEMBERS.c.runner_id == runner.id, CLUB_MEMBERS.c.invited.is_(False))
        .order_by(CLUBS.c.name)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        ClubPublic(id=r.id, name=r.name, owner_id=r.owner_id, members=r.members, your_role=r.role)
        for r in rows
    ]


@router.get("/invites", response_model=list[Invitation])
async def my_invitations(runner: CurrentRunner, engine: EngineDep) -> list[Invitation]:
    """Your pending club invitations; accept or decline each on its club."""
    stmt = (
        select(
            CLUBS.c.id,
            CLUBS.c.name,
            CLUBS.c.members,
            CLUB_MEMBERS.c.invited_by,
            CLUB_MEMBERS.c.invited_at,
            RUNNERS.c.handle,
        )
        .join(CLUB_MEMBERS, CLUB_MEMBERS.c.club_id == CLUBS.c.id)
        .outerjoin(RUNNERS, RUNNERS.c.id == CLUB_MEMBERS.c.invited_by)
        .where(CLUB_MEMBERS.c.runner_id == runner.id, CLUB_MEMBERS.c.invited.is_(True))
        .order_by(CLUBS.c.name, CLUBS.c.id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        Invitation(
            club_id=r.id,
            club_name=r.name,
            members=r.members,
            invited_by=r.invited_by,
            invited_by_handle=r.handle,
            invited_at=None if r.invited_at is None else datetime.fromtimestamp(r.invited_at, UTC),
        )
        for r in rows
    ]


@router.post("/join", response_model=ClubPublic, responses=problem_responses(404))
async def join_with_code(
    body: JoinIn,
    runner: CurrentRunner,
    engine: EngineDep,
    store: EventStoreDep,
    projections: ProjectionsDep,
    settings: SettingsDep,
) -> ClubPublic:
    """Join a club with its join code."""
    async with engine.connect() as conn:
        club_id = (
            await conn.execute(select(CLUBS.c.id).where(CLUBS.c.join_code == body.code))
        ).scalar()
    if club_id is None:
        raise ApiError(404, "bad_join_code", "no club has that join code")
    state = await _do(
        store, projections, club_id, club_decider.JoinWithCode(runner.id, body.code), runner.id
    )
    return _public(state, runner.id, settings.secret_key)


@router.get("/{club_id}", response_model=ClubPublic)
async def get_club(
    club_id: ClubId, runner: CurrentRunner, store: EventStoreDep, settings: SettingsDep
) -> ClubPublic:
    """A club; members see the member list and calendar, admins the join code."""
    return _public(await _state(store, club_id), runner.id, settings.secret_key)


@router.post("/{club_id}/invites", status_code=status.HTTP_201_CREATED)
async def invite(
    club_id: ClubId,
    body: InviteIn,
    runner: CurrentRunner,
    session: SessionDep,
    store: EventStoreDep,
    projections: ProjectionsDep,
) -> dict[str, str]:
    """Club admins: invite a runner by handle."""
    invitee = await find_by_handle(session, body.handle)
    if invitee is None:
        raise ApiError(404, "not_found", f"no runner {body.handle!r}")
    await _do(store, projections, club_id, club_decider.Invite(runner.id, invitee.id), runner.id)
    return {"runner_id": invitee.id, "status": "invited"}


@router.post("/{club_id}/invites/accept", response_model=ClubPublic)
async def accept_invite(
    club_id: ClubId,
    runner: CurrentRunner,
    store: EventStoreDep,
    projections: ProjectionsDep,
    settings: SettingsDep,
) -> ClubPublic:
    """Accept your invitation to a club."""
    state = await _do(store, projections, club_id, club_decider.AcceptInvite(runner.id), runner.id)
    return _public(state, runner.id, settings.secret_key)


@router.post("/{club_id}/invites/decline", status_code=status.HTTP_204_NO_CONTENT)
async def decline_invite(
    club_id: ClubId, runner: CurrentRunner, store: EventStoreDep, projections: ProjectionsDep
) -> None:
    """Decline your invitation to a club (an admin may invite you again)."""
    await _do(store, projections, club_id, club_decider.DeclineInvite(runner.id), runner.id)


@router.post("/{club_id}/leave", status_code=status.HTTP_204_NO_CONTENT)
async def leave(
    club_id: ClubId, runner: CurrentRunner, store: EventStoreDep, projections: ProjectionsDep
) -> None:
    """Leave a club (an owner transfers ownership first)."""
    await _do(store, projections, club_id, club_decider.Leave(runner.id), runner.id)


@router.delete("/{club_id}/members/{runner_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_member(
    club_id: ClubId,
    runner_id: Annotated[str, Path(max_length=36)],
    runner: CurrentRunner,
    store: EventStoreDep,
    projections: ProjectionsDep,
) -> None:
    """Club admins: remove a member (only the owner removes admins)."""
    await _do(
        store, projections, club_id, club_decider.RemoveMember(runner.id, runner_id), runner.id
    )


@router.put("/{club_id}/members/{runner_id}/role", response_model=Member)
async def set_role(
    club_id: ClubId,
    runner_id: Annotated[str, Path(max_length=36)],
    body: RoleIn,
    runner: CurrentRunner,
    store: EventStoreDep,
    projections: ProjectionsDep,
) -> Member:
    """The owner: make a member an admin, or an admin a member."""
    await _do(
        store,
        projections,
        club_id,
        club_decider.SetRole(runner.id, runner_id, body.role),
        runner.id,
    )
    return Member(runner_id=runner_id, role=body.role.value)


@router.post("/{club_id}/transfer", response_model=ClubPublic)
async def transfer(
    club_id: ClubId,
    body: TransferIn,
    runner: CurrentRunner,
    store: EventStoreDep,
    projections: ProjectionsDep,
    settings: SettingsDep,
) -> ClubPublic:
    """The owner: hand ownership to another member (you become an admin)."""
    cmd = club_decider.TransferOwnership(runner.id, body.runner_id)
    state = await _do(store, projections, club_id, cmd, runner.id)
    return _public(state, runner.id, settings.secret_key)


@router.post("/{club_id}/join-code", response_model=ClubPublic)
async def rotate_code(
    club_id: ClubId,
    runner: CurrentRunner,
    store: EventStoreDep,
    projections: ProjectionsDep,
    settings: SettingsDep,
) -> ClubPublic:
    """Club admins: replace the join code (the old one stops working)."""
    cmd = club_decider.RotateJoinCode(runner.id, secrets.token_urlsafe(6))
    state = await _do(store, projections, club_id, cmd, runner.id)
    return _public(state, runner.id, settings.secret_key)


async def _calendar(engine: EngineDep, club_id: str) -> list[CalendarItem]:
    now = datetime.now(UTC).timestamp()
    async with engine.connect() as conn:
        races = (
            await conn.execute(
                select(RACES).where(
                    RACES.c.club_id == club_id,
                    RACES.c.status.in_(["scheduled", "countdown", "running", "paused"]),
                )
            )
        ).all()
        challenges = (
            await conn.execute(
                select(CHALLENGES).where(
                    CHALLENGES.c.club_id == club_id, CHALLENGES.c.ends_at > now
                )
            )
        ).all()
    items = [
        CalendarItem(
            kind="race",
            id=r.id,
            title=r.title,
            starts_at=datetime.fromtimestamp(r.start_at or r.scheduled_at, UTC),
            ends_at=None,
        )
        for r in races
    ] + [
        CalendarItem(
            kind="challenge",
            id=c.id,
            title=c.title,
            starts_at=datetime.fromtimestamp(c.starts_at, UTC),
            ends_at=datetime.fromtimestamp(c.ends_at, UTC),
        )
        for c in challenges
    ]
    return sorted(items, key=lambda i: (i.starts_at, i.id))


@router.get("/{club_id}/calendar", response_model=list[CalendarItem])
async def calendar(
    club_id: ClubId, runner: CurrentRunner, store: EventStoreDep, engine: EngineDep
) -> list[CalendarItem]:
    """Members: upcoming club races and club challenges."""
    if (await _state(store, club_id)).role_of(runner.id) is None:
        raise ApiError(403, "forbidden", "members only")
    return await _calendar(engine, club_id)


def _ics_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


_LABEL = {"race": "Race: ", "challenge": "Challenge: "}


def _ics_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


@router.get("/{club_id}/calendar.ics", response_class=Response, responses=problem_responses(403))
async def calendar_ics(
    club_id: ClubId,
    key: Annotated[str, Query(max_length=64)],
    store: EventStoreDep,
    engine: EngineDep,
    settings: SettingsDep,
) -> Response:
    """iCalendar feed of the club calendar for phones; the key is on the club page."""
    expected = _calendar_key(settings.secret_key, club_id)
    if not hmac.compare_digest(key.encode(), expected.encode()):  # str: ASCII only, else TypeError
        raise ApiError(403, "forbidden", "that calendar key is not valid")
    state = await _state(store, club_id)
    stamp = _ics_time(datetime.now(UTC))
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//RetroRun//Club calendar//EN",
        f"X-WR-CALNAME:{_ics_text(state.name)}",
    ]
    for item in await _calendar(engine, club_id):
        lines += [
            "BEGIN:VEVENT",
            f"UID:{item.kind}-{item.id}@retrorun",
            f"DTSTAMP:{stamp}",
            f"DTSTART:{_ics_time(item.starts_at)}",
            *([f"DTEND:{_ics_time(item.ends_at)}"] if item.ends_at else []),
            f"SUMMARY:{_ics_text(_LABEL[item.kind] + item.title)}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return Response("\r\n".join(lines) + "\r\n", media_type="text/calendar")
