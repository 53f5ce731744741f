"""The runner-standing decider: bans and unbans, each with its moderator and reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from game.errors import Conflict, InvalidCommand
from game.events import event


@dataclass(frozen=True, slots=True)
class Ban:
    runner_id: str
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unban:
    runner_id: str
    by: str
    reason: str


@event("RunnerBanned")
@dataclass(frozen=True, slots=True)
class RunnerBanned:
    runner_id: str
    by: str
    reason: str


@event("RunnerUnbanned")
@dataclass(frozen=True, slots=True)
class RunnerUnbanned:
    runner_id: str
    by: str
    reason: str


@dataclass(frozen=True, slots=True)
class Standing:
    banned: bool = False


def initial_state() -> Standing:
    return Standing()


def decide(
    state: Standing, command: Ban | Unban, now: datetime
) -> list[RunnerBanned | RunnerUnbanned]:
    """Ban or unban a runner."""
    reason = command.reason.strip()[:500]
    if not reason:
        raise InvalidCommand("a moderation decision needs a reason")
    if command.runner_id == command.by:
        raise InvalidCommand("moderators do not ban themselves")
    if isinstance(command, Ban):
        if state.banned:
            raise Conflict("already banned", code="already_banned")
        return [RunnerBanned(command.runner_id, command.by, reason)]
    if not state.banned:
        raise Conflict("not banned", code="not_banned")
    return [RunnerUnbanned(command.runner_id, command.by, reason)]


def evolve(state: Standing, evt: RunnerBanned | RunnerUnbanned) -> Standing:
    """Apply one event."""
    return Standing(banned=isinstance(evt, RunnerBanned))
