"""Drills: the template library, scheduling a drill session, and its results."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, ConfigDict, Field

from game import drill_sessions as ds
from game import drills
from server.authz import require_organiser
from server.commands import execute, load_state
from server.deps import CurrentRunner, EventStoreDep, ProjectionsDep
from server.errors import ApiError

router = APIRouter(prefix="/drills", tags=["drills"])
DrillId = Annotated[str, Path(max_length=36, pattern=r"^[A-Za-z0-9_-]+$")]


class PhaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    move: drills.Move
    duration_s: float = Field(ge=drills.MIN_PHASE_S, le=drills.MAX_PHASE_S)
    switch_cues: int = Field(default=0, ge=0, le=drills.MAX_SWITCH_CUES)
    prompt: str = Field(default="", max_length=60)


class TemplateOut(BaseModel):
    key: str
    title: str
    level: str
    duration_s: float
    safety: str
    description: str
    phases: list[PhaseModel]


class DrillCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: str | None = Field(
        default=None, description="a library template key", examples=["switch-it"]
    )
    title: str | None = Field(
        default=None, min_length=3, max_length=60, description="your own drill"
    )
    level: drills.Level = drills.Level.INTERMEDIATE
    phases: list[PhaseModel] | None = Field(default=None, max_length=drills.MAX_PHASES)
    club_id: str | None = Field(default=None, max_length=36)


class DrillPublic(BaseModel):
    id: str
    title: str
    coach_id: str
    club_id: str | None
    status: str
    phases: list[PhaseModel]
    start_at: float | None = Field(description="Unix seconds (server time) of the first cue")
    cues: list[dict[str, Any]] = Field(description="every cue with its absolute server time `at`")
    scores: list[dict[str, Any]]
    sync_score: float | None
    room: str


def _template_out(t: drills.Template) -> TemplateOut:
    return TemplateOut(
        key=t.key,
        title=t.title,
        level=t.level.value,
        duration_s=t.duration_s,
        safety=t.safety,
        description=t.description,
        phases=[
            PhaseModel(
                move=p.move, duration_s=p.duration_s, switch_cues=p.switch_cues, prompt=p.prompt
            )
            for p in t.phases
        ],
    )


def _public(s: ds.DrillState) -> DrillPublic:
    return DrillPublic(
        id=s.drill_id,
        title=s.title,
        coach_id=s.coach_id,
        club_id=s.club_id,
        status=s.status.value,
        phases=[
            PhaseModel(
                move=p.move, duration_s=p.duration_s, switch_cues=p.switch_cues, prompt=p.prompt
            )
            for p in s.phases
        ],
        start_at=s.start_at,
        cues=[
            {"id": c.id, "at": c.at, "move": c.move.value, "prompt": c.prompt, "scored": c.scored}
            for c in s.cues
        ],
        scores=list(s.scores),
        sync_score=s.sync_score,
        room=f"/ws/rooms/{s.drill_id}",
    )


@router.get("/templates", response_model=list[TemplateOut])
async def templates() -> list[TemplateOut]:
    """The drill library, beginners to advanced, each with its safety notes."""
    return [_template_out(t) for t in drills.LIBRARY]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DrillPublic)
async def create_drill(
    body: DrillCreate, runner: CurrentRunner, store: EventStoreDep, projections: ProjectionsDep
) -> DrillPublic:
    """Schedule a drill session from a template or your own phases (moderators; club owners and
    admins for their club). Start it from the room with `control {action: "start"}`."""
    await require_organiser(store, runner, body.club_id)
    drill_id = "drill-" + uuid.uuid4().hex[:10]
    if body.template is not None:
        tpl = drills.TEMPLATES.get(body.template)
        if tpl is None:
            raise ApiError(422, "invalid", f"template: unknown template {body.template!r}")
    elif body.phases and body.title:
        phases = [drills.Phase(p.move, p.duration_s, p.switch_cues, p.prompt) for p in body.phases]
        tpl = drills.compose("custom", body.title, body.level, phases)
    else:
        raise ApiError(422, "invalid", "send a `template` key, or a `title` with `phases`")
    cmd = ds.ScheduleDrill(drill_id, tpl, runner.id, body.club_id)
    outcome = await execute(store, f"drill-{drill_id}", ds, cmd, meta={"actor": runner.id})
    await projections.run_once()
    return _public(outcome.state)


@router.get("/{drill_id}", response_model=DrillPublic)
async def get_drill(drill_id: DrillId, store: EventStoreDep) -> DrillPublic:
    """A drill session: its phases, its cues once started, and the scores once finished."""
    state, _ = await load_state(store, f"drill-{drill_id}", ds)
    if state.status == ds.DrillStatus.NONE:
        raise ApiError(404, "not_found", f"no drill {drill_id!r}")
    return _public(state)
