"""Structured logs with a request id, request metrics, and the request body cap (pure ASGI)."""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server import metrics
from server.limits import SECURITY_HEADERS

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, carrying the request id of the request being served."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            doc["request_id"] = rid
        for key in ("method", "path", "status", "duration_ms"):
            if hasattr(record, key):
                doc[key] = getattr(record, key)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(json_logs: bool, debug: bool) -> None:
    handler = logging.StreamHandler()
    if json_logs:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


_access = logging.getLogger("retrorun.access")

_TOO_LARGE = orjson.dumps(
    {
        "type": "https://retrorun.dev/problems/payload_too_large",
        "title": "Content Too Large",
        "status": 413,
        "detail": "the request body is larger than this server accepts",
        "code": "payload_too_large",
    }
)


_SECURITY_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


class _BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Request id (from `X-Request-ID` or new), access log, metrics, and a body size cap."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        response_started = False
        length = headers.get(b"content-length")
        too_large = length is not None and length.isdigit() and int(length) > self.max_body_bytes
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            if too_large:
                await self._reject_too_large(send_with_id)
            else:
                try:
                    await self.app(scope, capped_receive, send_with_id)
                except _BodyTooLarge:
                    if response_started:
                        raise
                    await self._reject_too_large(send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_name = getattr(route, "path", None) or "unmatched"
            metrics.HTTP_REQUESTS.labels(scope["method"], route_name, str(status)).inc()
            metrics.HTTP_LATENCY.labels(scope["method"], route_name).observe(elapsed)
            _access.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            request_id.reset(token)

    @staticmethod
    async def _reject_too_large(send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(_TOO_LARGE)).encode()),
                    *_SECURITY_HEADERS,  # sent from outside the limits middleware that adds them
                ],
            }
        )
        await send({"type": "http.response.body", "body": _TOO_LARGE})
