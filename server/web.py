"""The phone web client: static files served at `/`, with security headers.

The files live in `clients/web/` and ship as package data of the `clients` package. The server
finds them by path, beside its own package, because `server` must never import `clients`
(the layers contract in pyproject.toml).
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketClose

#: `clients/web`, located relative to this package (works for editable and wheel installs).
WEB_DIR = Path(__file__).resolve().parent.parent / "clients" / "web"

#: Self-only: no inline script or style, no third-party origin. `data:` images for the canvas.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "manifest-src 'self'",
        "worker-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (ETag makes it cheap); the service worker serves the shell offline.
    "Cache-Control": "no-cache",
}

mimetypes.add_type("application/manifest+json", ".webmanifest")
mimetypes.add_type("text/javascript", ".js")


class WebClient(StaticFiles):
    """`StaticFiles` (with `index.html` at `/`) that adds the client's security headers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # a WebSocket to no room route: refuse, don't crash
            await WebSocketClose(code=1008)(scope, receive, send)  # policy violation
            return
        await super().__call__(scope, receive, send)

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def web_client(directory: str | os.PathLike[str] = WEB_DIR) -> WebClient | None:
    """The static client app, or None when its files are not installed."""
    if not Path(directory).is_dir():
        return None
    return WebClient(directory=directory, html=True)
