"""Errors in one place: domain codes -> HTTP status and RFC 9457 problem documents.

Every 4xx and 5xx the API returns is `application/problem+json` with `type`, `title`, `status`,
`detail` and a stable `code`. The same table maps domain codes to WebSocket error frames.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from game.errors import Conflict, DomainError, Forbidden, NotFound

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://retrorun.dev/problems/"

#: DomainError.code -> HTTP status. Codes not listed here map by their class (see `status_for`).
STATUS_BY_CODE: dict[str, int] = {
    "not_found": 404,
    "forbidden": 403,
    "conflict": 409,
    "version_conflict": 409,
    "idempotency_key_reused": 422,
    "invalid": 422,
    "handle_taken": 409,
    "invalid_credentials": 401,
    "login_throttled": 429,
    "banned": 403,
}


def status_for(exc: DomainError) -> int:
    """The HTTP status of a domain error: by its code, else by its kind."""
    if exc.code in STATUS_BY_CODE:
        return STATUS_BY_CODE[exc.code]
    for kind, status in _STATUS_BY_KIND:
        if isinstance(exc, kind):
            return status
    return 422


_STATUS_BY_KIND: tuple[tuple[type[DomainError], int], ...] = (
    (NotFound, 404),
    (Forbidden, 403),
    (Conflict, 409),
)


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """An RFC 9457 problem document response."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
}


class ApiError(StarletteHTTPException):
    """A transport-level error with a stable code (401, 403, 404, 413 ...)."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.code = code


def _json_safe(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        item = {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        out.append(item)
    return out


def add_exception_handlers(app: FastAPI) -> None:
    """Register the one mapping from exceptions to problem documents."""

    @app.exception_handler(DomainError)
    async def _domain(_req: Request, exc: DomainError) -> JSONResponse:
        return problem(status_for(exc), exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _json_safe(list(exc.errors()))
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"])
        return problem(422, "invalid", f"{where}: {msg}" if where else msg, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or _HTTP_CODES.get(exc.status_code, "error")
        headers = dict(exc.headers) if exc.headers else None
        return problem(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal", "an unexpected error occurred; it has been logged")
