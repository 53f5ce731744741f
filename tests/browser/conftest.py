"""Browser tests: Debian's Chromium driven by Playwright against a real uvicorn server.

Never downloads a browser (`playwright install` is not used): Chromium comes from the system
(`apt-get install chromium`). When it is missing and we run as root with apt-get available, the
suite installs Debian's package once; where that is impossible these tests skip with a reason, and
with CI=true they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from server.app import create_app
from server.config import Rate, Settings
from tests.api.helpers import create_user
from tests.conftest import IN_CI

CHROMIUM = os.environ.get("RETRORUN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
#: A moderator account seeded into the test server (password `backwards!`).
MODERATOR = "moderator1"
#: Somewhere flat and open (Tempelhofer Feld, Berlin).
START = {"latitude": 52.4731, "longitude": 13.4019, "accuracy": 5}


def _install_chromium() -> None:
    """Install Debian's chromium when missing, if this process may (root, apt-get present)."""
    if Path(CHROMIUM).exists() or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=300, check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], env=env, timeout=600, check=True
        )


def _require_chromium() -> None:
    _install_chromium()
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium is not at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package is not installed (pip install -e '.[test]')")
    if not missing:
        return
    message = "; ".join(missing)
    if IN_CI:
        pytest.fail(f"{message}, and CI=true requires it", pytrace=False)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveServer:
    """uvicorn serving `create_app` in a thread, on a free loopback port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            log_config=None,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="package")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    db = tmp_path_factory.mktemp("browser") / "web.db"
    settings = Settings(
        database_url=f"sqlite:///{db}",
        secret_key="browser-test-secret-key-long-enough-for-hs256-0123",
        log_json=False,
        scheduler_interval_s=3600,
        # Every page and scripted runner of the suite signs up and in from 127.0.0.1: one
        # client address, so the per-address buckets are sized for the suite, not for a person.
        rate_limit_login=Rate(300, 60.0),
        rate_limit_register=Rate(300, 60.0),
        # every page load fetches the app's ~25 files (twice: the page and the service worker's
        # precache), and the accessibility pass opens 20 screens in a row
        rate_limit_default=Rate(5000, 10.0),
    )
    # Accounts made before the server starts: a second writer on a busy SQLite file may be
    # refused ("database is locked"); a server-side writer retries, a test should not have to.
    create_user(settings, MODERATOR, "moderator")
    with LiveServer(settings) as server:
        yield server


@pytest.fixture(scope="package")
def browser(live_server: LiveServer) -> Iterator[Any]:
    # Package scope, not session: sync Playwright keeps an event loop running in this thread
    # while it is open, which would break every asyncio test collected after this package.
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def context(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    """A phone: 390x844 portrait, touch, geolocation granted, the test hook switched on."""
    ctx = browser.new_context(
        base_url=live_server.url,
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        geolocation=START,
        permissions=["geolocation"],
        locale="en-GB",
        timezone_id="UTC",
    )
    ctx.set_default_timeout(10_000)
    ctx.add_init_script("localStorage.setItem('retrorun.testHooks', '1')")
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    yield p
    assert not errors, f"uncaught errors in the page: {errors}"


_handles = iter(range(1, 10_000))


@pytest.fixture
def unique_handle() -> Callable[[str], str]:
    return lambda prefix: f"{prefix}{os.getpid() % 1000}x{next(_handles)}"
