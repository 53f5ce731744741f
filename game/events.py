"""Events and deciders: the shapes every aggregate in `game/` shares.

An aggregate is a *decider*: `initial_state()`, `decide(state, command, now) -> list[Event]` and
`evolve(state, event) -> State`. Events are frozen dataclasses with a stable `type` name and a
`schema_version`; they serialise to plain JSON-ready dicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar

S = TypeVar("S")
C = TypeVar("C", contravariant=True)
E = TypeVar("E")


class Event(Protocol):
    """What the event store needs from a domain event."""

    type: ClassVar[str]
    schema_version: ClassVar[int]


class Decider(Protocol[S, C, E]):
    """The three functions of an aggregate."""

    def initial_state(self) -> S: ...
    def decide(self, state: S, command: C, now: datetime) -> list[E]: ...
    def evolve(self, state: S, event: E) -> S: ...


_REGISTRY: dict[str, type[Any]] = {}


def event(name: str, version: int = 1) -> Callable[[type[Any]], type[Any]]:
    """Class decorator: register a frozen dataclass as the event type `name`."""

    def wrap(cls: type[Any]) -> type[Any]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"event type {name!r} is registered twice")
        cls.type = name
        cls.schema_version = version
        _REGISTRY[name] = cls
        return cls

    return wrap


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    """The dataclass field names of an event class, looked up once per class."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def to_data(evt: Any) -> dict[str, Any]:
    """The JSON-ready payload of an event (its dataclass fields)."""
    return {name: getattr(evt, name) for name in _field_names(type(evt))}


def from_data(type_name: str, data: dict[str, Any]) -> Any:
    """Rebuild a registered event from its type name and payload."""
    try:
        cls = _REGISTRY[type_name]
    except KeyError as exc:
        raise KeyError(f"unknown event type {type_name!r}") from exc
    return cls(**data)


def fold(evolve: Callable[[S, E], S], state: S, events: Iterable[E]) -> S:
    """Rebuild state by applying `evolve` to each event in order."""
    for e in events:
        state = evolve(state, e)
    return state
