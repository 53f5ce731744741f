"""Who may act for a club: shared by the routes that schedule club challenges and races."""

from __future__ import annotations

from game import clubs as club_decider
from server.commands import load_state
from server.errors import ApiError
from server.store.event_store import EventStore
from server.store.tables import Runner


async def club_state(store: EventStore, club_id: str) -> club_decider.ClubState:
    """A club's state; 404 when there is no such club."""
    state, _ = await load_state(store, f"club-{club_id}", club_decider)
    if not state.exists:
        raise ApiError(404, "not_found", f"no club {club_id!r}")
    found: club_decider.ClubState = state
    return found


async def require_organiser(store: EventStore, runner: Runner, club_id: str | None) -> None:
    """Moderators organise official events; club owners and admins organise their club's."""
    if club_id is None:
        if runner.role not in ("moderator", "admin"):
            raise ApiError(403, "forbidden", "only moderators organise official events")
        return
    state = await club_state(store, club_id)
    if not state.is_admin(runner.id) and runner.role not in ("moderator", "admin"):
        raise ApiError(403, "forbidden", "only the club's owner and admins organise its events")
