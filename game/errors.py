"""Domain errors: every rule violation has a stable machine-readable `code`."""

from __future__ import annotations


class DomainError(Exception):
    """A command broke a rule. `code` is stable and documented; `message` is for people."""

    code: str = "domain_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """The command clashes with the current state (already joined, already started ...)."""

    code = "conflict"


class InvalidCommand(DomainError):
    """The command's own values are out of bounds."""

    code = "invalid"


class Forbidden(DomainError):
    """The actor may not do this to this aggregate."""

    code = "forbidden"
