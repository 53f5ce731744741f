"""Prometheus metrics. One registry per process; the `/metrics` route renders it."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "retrorun_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "retrorun_http_request_duration_seconds", "HTTP request latency", ["method", "route"]
)
WS_CONNECTIONS = Gauge("retrorun_ws_connections", "Open WebSocket connections")
EVENTS_APPENDED = Counter("retrorun_events_appended_total", "Events appended to the event store")
RATE_LIMITED = Counter(
    "retrorun_rate_limited_total", "Requests refused by an abuse limit (429)", ["limit"]
)
WS_FRAMES_SENT = Counter(
    "retrorun_ws_frames_sent_total",
    "Room frames sent: written at once (`direct`) or through ASGI after waiting (`asgi`)",
    ["path"],
)
WS_CLOSED = Counter(
    "retrorun_ws_closed_total",
    "Room sockets the server closed for a reason, by close code (1013: a slow consumer; "
    "docs/protocol.md); a normal 1000 end is not counted",
    ["code"],
)
#: Bound once: the room fan-out counts every frame.
WS_FRAMES_DIRECT = WS_FRAMES_SENT.labels("direct")
WS_FRAMES_ASGI = WS_FRAMES_SENT.labels("asgi")
