"""The Club decider: a running club with a join code, invitations and roles.

Roles: `owner` (exactly one), `admin` (schedules club races, drills and challenges, manages
members) and `member`. The owner can hand ownership to another member; the last owner cannot
leave without doing so.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from game.errors import Conflict, Forbidden, InvalidCommand
from game.events import event


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


MAX_MEMBERS = 5000


# Commands


@dataclass(frozen=True, slots=True)
class CreateClub:
    club_id: str
    name: str
    owner_id: str
    join_code: str


@dataclass(frozen=True, slots=True)
class JoinWithCode:
    runner_id: str
    code: str


@dataclass(frozen=True, slots=True)
class Invite:
    by: str
    runner_id: str


@dataclass(frozen=True, slots=True)
class AcceptInvite:
    runner_id: str


@dataclass(frozen=True, slots=True)
class DeclineInvite:
    runner_id: str


@dataclass(frozen=True, slots=True)
class Leave:
    runner_id: str


@dataclass(frozen=True, slots=True)
class RemoveMember:
    by: str
    runner_id: str


@dataclass(frozen=True, slots=True)
class SetRole:
    by: str
    runner_id: str
    role: Role


@dataclass(frozen=True, slots=True)
class TransferOwnership:
    by: str
    runner_id: str


@dataclass(frozen=True, slots=True)
class RotateJoinCode:
    by: str
    join_code: str


# Events


@event("ClubCreated")
@dataclass(frozen=True, slots=True)
class ClubCreated:
    club_id: str
    name: str
    owner_id: str
    join_code: str


@event("ClubMemberJoined")
@dataclass(frozen=True, slots=True)
class MemberJoined:
    club_id: str
    runner_id: str
    via: str  # "code" or "invite"


@event("ClubMemberInvited")
@dataclass(frozen=True, slots=True)
class MemberInvited:
    club_id: str
    runner_id: str
    by: str
    at: float | None = None  # Unix seconds; None in invitations logged before it was recorded


@event("ClubInviteDeclined")
@dataclass(frozen=True, slots=True)
class InviteDeclined:
    club_id: str
    runner_id: str


@event("ClubMemberLeft")
@dataclass(frozen=True, slots=True)
class MemberLeft:
    club_id: str
    runner_id: str


@event("ClubMemberRemoved")
@dataclass(frozen=True, slots=True)
class MemberRemoved:
    club_id: str
    runner_id: str
    by: str


@event("ClubRoleChanged")
@dataclass(frozen=True, slots=True)
class RoleChanged:
    club_id: str
    runner_id: str
    role: str
    by: str


@event("ClubOwnershipTransferred")
@dataclass(frozen=True, slots=True)
class OwnershipTransferred:
    club_id: str
    from_id: str
    to_id: str


@event("ClubJoinCodeRotated")
@dataclass(frozen=True, slots=True)
class JoinCodeRotated:
    club_id: str
    join_code: str
    by: str


ClubEvent = (
    ClubCreated
    | MemberJoined
    | MemberInvited
    | InviteDeclined
    | MemberLeft
    | MemberRemoved
    | RoleChanged
    | OwnershipTransferred
    | JoinCodeRotated
)


@dataclass(frozen=True, slots=True)
class ClubState:
    exists: bool = False
    club_id: str = ""
    name: str = ""
    join_code: str = ""
    roles: dict[str, Role] = field(default_factory=dict)
    invited: frozenset[str] = frozenset()

    def role_of(self, runner_id: str) -> Role | None:
        return self.roles.get(runner_id)

    def is_admin(self, runner_id: str) -> bool:
        return self.roles.get(runner_id) in (Role.OWNER, Role.ADMIN)


def initial_state() -> ClubState:
    return ClubState()


Command = (
    CreateClub
    | JoinWithCode
    | Invite
    | AcceptInvite
    | DeclineInvite
    | Leave
    | RemoveMember
    | SetRole
    | TransferOwnership
    | RotateJoinCode
)


def decide(state: ClubState, command: Command, now: datetime) -> list[ClubEvent]:
    """Decide a club command."""
    if isinstance(command, CreateClub):
        if state.exists:
            raise Conflict("this club already exists", code="club_exists")
        name = command.name.strip()
        if not 3 <= len(name) <= 60:
            raise InvalidCommand("a club name is 3 to 60 characters")
        return [ClubCreated(command.club_id, name, command.owner_id, command.join_code)]
    if not state.exists:
        raise InvalidCommand("no such club", code="not_found")
    cid = state.club_id
    match command:
        case JoinWithCode(runner_id, code):
            if code != state.join_code:
                raise InvalidCommand("that join code is not valid", code="bad_join_code")
            _can_join(state, runner_id)
            return [MemberJoined(cid, runner_id, "code")]
        case Invite(by, runner_id):
            _admin(state, by)
            if runner_id in state.roles:
                raise Conflict("already a member", code="already_member")
            if runner_id in state.invited:
                raise Conflict("already invited", code="already_invited")
            return [MemberInvited(cid, runner_id, by, now.timestamp())]
        case AcceptInvite(runner_id):
            if runner_id not in state.invited:
                raise Forbidden("you have no invitation to this club")
            _can_join(state, runner_id)
            return [MemberJoined(cid, runner_id, "invite")]
        case DeclineInvite(runner_id):
            if runner_id not in state.invited:
                raise Forbidden("you have no invitation to this club")
            return [InviteDeclined(cid, runner_id)]
        case Leave(runner_id):
            role = state.role_of(runner_id)
            if role is None:
                raise Conflict("you are not a member", code="not_member")
            if role == Role.OWNER:
                raise Conflict("transfer ownership before leaving", code="owner_cannot_leave")
            return [MemberLeft(cid, runner_id)]
        case RemoveMember(by, runner_id):
            _admin(state, by)
            role = state.role_of(runner_id)
            if role is None:
                raise Conflict("not a member", code="not_member")
            if role == Role.OWNER or (role == Role.ADMIN and state.role_of(by) != Role.OWNER):
                raise Forbidden("only the owner removes admins, and nobody removes the owner")
            return [MemberRemoved(cid, runner_id, by)]
        case SetRole(by, runner_id, role):
            if state.role_of(by) != Role.OWNER:
                raise Forbidden("only the owner changes roles")
            if role == Role.OWNER:
                raise InvalidCommand("use a transfer to hand over ownership")
            current = state.role_of(runner_id)
            if current is None:
                raise Conflict("not a member", code="not_member")
            if current == Role.OWNER:
                raise Forbidden("the owner's role changes only by a transfer")
            if current == role:
                return []
            return [RoleChanged(cid, runner_id, role.value, by)]
        case TransferOwnership(by, runner_id):
            if state.role_of(by) != Role.OWNER:
                raise Forbidden("only the owner transfers ownership")
            if state.role_of(runner_id) is None or runner_id == by:
                raise InvalidCommand("ownership goes to another member")
            return [OwnershipTransferred(cid, by, runner_id)]
        case RotateJoinCode(by, join_code):
            _admin(state, by)
            return [JoinCodeRotated(cid, join_code, by)]
    raise InvalidCommand("unknown club command")


def _admin(state: ClubState, runner_id: str) -> None:
    if not state.is_admin(runner_id):
        raise Forbidden("club admins only")


def _can_join(state: ClubState, runner_id: str) -> None:
    if runner_id in state.roles:
        raise Conflict("you are already a member", code="already_member")
    if len(state.roles) >= MAX_MEMBERS:
        raise Conflict("the club is full", code="club_full")


def evolve(state: ClubState, evt: ClubEvent) -> ClubState:
    """Apply one event to a club's state."""
    match evt:
        case ClubCreated():
            return ClubState(
                exists=True,
                club_id=evt.club_id,
                name=evt.name,
                join_code=evt.join_code,
                roles={evt.owner_id: Role.OWNER},
            )
        case MemberJoined():
            return replace(
                state,
                roles={**state.roles, evt.runner_id: Role.MEMBER},
                invited=state.invited - {evt.runner_id},
            )
        case MemberInvited():
            return replace(state, invited=state.invited | {evt.runner_id})
        case InviteDeclined():
            return replace(state, invited=state.invited - {evt.runner_id})
        case MemberLeft() | MemberRemoved():
            roles = dict(state.roles)
            roles.pop(evt.runner_id, None)
            return replace(state, roles=roles)
        case RoleChanged():
            return replace(state, roles={**state.roles, evt.runner_id: Role(evt.role)})
        case OwnershipTransferred():
            return replace(
                state, roles={**state.roles, evt.from_id: Role.ADMIN, evt.to_id: Role.OWNER}
            )
        case JoinCodeRotated():
            return replace(state, join_code=evt.join_code)
    return state
