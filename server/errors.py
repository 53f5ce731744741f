"""Errors in one place: domain codes -> HTTP status and RFC 9457 problem documents.

Every 4xx and 5xx the API returns is `application/problem+json` with `type`, `title`, `status`,
`detail` and a stable `code`. The same table maps domain codes to WebSocket error frames.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from game.errors import Conflict, DomainError, Forbidden, NotFound
from server.store.db import DATABASE_UNAVAILABLE

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


PROBLEM_MEDIA_TYPE = "application/problem+json"

#: The OpenAPI schema of every problem document (components/schemas/Problem).
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem document; `code` is stable, `detail` is for people.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "examples": [PROBLEM_BASE + "not_found"]},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "examples": ["not_found"]},
    },
    "additionalProperties": True,
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

#: What each documented problem status means (the response descriptions in OpenAPI).
PROBLEM_DESCRIPTIONS: dict[int, str] = {
    400: "The request body cannot be parsed (not UTF-8, not a form)",
    401: "Not signed in, or the token is invalid, expired or revoked",
    403: "Not allowed (role, ownership or a ban)",
    404: "No such resource (or not yours to see)",
    409: "Conflicts with the current state (taken, already done, concurrent change)",
    413: "The request body is larger than this server accepts",
    415: "Unsupported request media type",
    422: "The request is invalid (the `errors` member lists what and where)",
    429: "Too many requests: retry after `Retry-After` seconds",
    503: "A dependency is unavailable",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for problem documents with these statuses, for routes whose
    problems the generic rules (`document_problems`) do not infer."""
    return {
        status: {
            "description": PROBLEM_DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}},
        }
        for status in statuses
    }


def _body_fields(op: dict[str, Any], schemas: dict[str, Any]) -> set[str]:
    """The top-level fields of an operation's JSON request body."""
    content = op.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = schemas.get(ref.rsplit("/", 1)[1], {})
    return set(schema.get("properties", {}))


def _problem_statuses(
    path: str, method: str, op: dict[str, Any], schemas: dict[str, Any]
) -> set[int]:
    """The problems any route of this shape can answer, whatever its handler does."""
    statuses = {429}  # every request counts against a rate limit (server/limits.py)
    if op.get("parameters") or op.get("requestBody"):
        statuses.add(422)
    if op.get("requestBody"):
        statuses |= {400, 413}  # 400: a body that cannot be parsed at all (not UTF-8 ...)
    if op.get("security"):
        statuses |= {401, 403}  # 403: a banned account, or the wrong role
    if "{" in path or any(f.endswith("_id") for f in _body_fields(op, schemas)):
        statuses.add(404)  # the resource, or one the body refers to (`club_id` ...), is missing
    if method in ("post", "put", "patch", "delete"):
        statuses.add(409)
    if path.startswith("/api/"):
        statuses.add(503)  # the database is busy or unreachable (`_database_busy`)
    return statuses


def document_problems(app: FastAPI) -> None:
    """Document problem documents in the app's OpenAPI schema, once for every route.

    Every operation gets the problem statuses its shape allows (`_problem_statuses`); every 4xx
    and 5xx response an operation documents (FastAPI's own 422 included) is described as
    `application/problem+json` with the `Problem` schema, which is what the handlers send.
    """
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        for path, operations in schema.get("paths", {}).items():
            for method, op in operations.items():
                if not isinstance(op, dict) or "responses" not in op:
                    continue
                responses: dict[str, Any] = op["responses"]
                for status in _problem_statuses(path, method, op, schemas):
                    responses.setdefault(str(status), {})
                for key, response in responses.items():
                    if key.isdigit() and int(key) >= 400:
                        status = int(key)
                        response["description"] = PROBLEM_DESCRIPTIONS.get(
                            status, response.get("description") or HTTPStatus(status).phrase
                        )
                        response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}
                op["responses"] = dict(sorted(responses.items()))
        for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, now replaced
            if f'"#/components/schemas/{name}"' not in json.dumps(schema):
                schemas.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_exception_handlers(app: FastAPI) -> None:
    """Register the one mapping from exceptions to problem documents, and document them in the
    OpenAPI schema (`document_problems`)."""
    document_problems(app)

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

    async def _database_busy(_req: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable or busy: %s", getattr(exc, "orig", None) or exc)
        return problem(
            503, "unavailable", "the database is busy; retry shortly", headers={"Retry-After": "1"}
        )

    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_busy)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal", "an unexpected error occurred; it has been logged")
