"""The operator command line on a fresh database: migrate, users create, rebuild."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.config import Settings


def _retrorun(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("retrorun")
    env = {
        **os.environ,
        "RETRORUN_DATABASE_URL": f"sqlite:///{db}",
        "RETRORUN_SECRET_KEY": "s" * 40,
    }
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=120)


def test_operators_migrate_create_users_and_rebuild(tmp_path: Path) -> None:
    db = tmp_path / "ops.db"
    assert _retrorun(db, "migrate").returncode == 0
    made = _retrorun(
        db, "users", "create", "--handle", "boss", "--password", "backwards!", "--role", "admin"
    )
    assert made.returncode == 0, made.stdout + made.stderr
    dup = _retrorun(db, "users", "create", "--handle", "BOSS", "--password", "backwards!")
    assert dup.returncode == 1 and "taken" in dup.stdout
    bad = _retrorun(
        db, "users", "create", "--handle", "x1y", "--password", "backwards!", "--role", "king"
    )
    assert bad.returncode == 2

    settings = Settings(database_url=f"sqlite:///{db}", secret_key="s" * 40)
    with TestClient(create_app(settings)) as client:
        token = client.post(
            "/api/v1/auth/token", data={"username": "boss", "password": "backwards!"}
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert client.get("/api/v1/me", headers=headers).json()["role"] == "admin"
        weekly = client.get("/api/v1/challenges/current").json()["id"]
        client.post(f"/api/v1/challenges/{weekly}/join", headers=headers)
        before = client.get(f"/api/v1/challenges/{weekly}").json()

    rebuilt = _retrorun(db, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "replayed" in rebuilt.stdout
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/api/v1/challenges/{weekly}").json() == before


async def test_serve_freezes_startup_objects_and_collects_the_young_generation_less_often() -> None:
    """`retrorun serve`'s server (Settings.gc_gen0): once started, what startup loaded is out of
    the collector's reach and generation 0 is collected every `gc_gen0` allocations."""
    import asyncio
    import gc

    import uvicorn
    from starlette.applications import Starlette

    from server.cli import _DrainingServer

    app = Starlette()
    before = gc.get_threshold()
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    server = _DrainingServer(config, app, gc_gen0=12_345)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 1000  # the modules and objects loaded so far
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        gc.unfreeze()
        gc.set_threshold(*before)


_ARENAS_PROBE = r"""
import ctypes, sys, tempfile, threading
from server.cli import limit_malloc_arenas

capped = limit_malloc_arenas(int(sys.argv[1]))

def work():
    blocks = [bytearray(4096) for _ in range(200)]  # past pymalloc: glibc's malloc
    del blocks

threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
with tempfile.NamedTemporaryFile(suffix=".xml") as out:
    fp = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(fp))
    libc.fclose(ctypes.c_void_p(fp))
    print(capped, open(out.name).read().count("<heap nr="))
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt(M_ARENA_MAX) is glibc's",
)
def test_serve_caps_glibc_s_malloc_arenas() -> None:
    """`retrorun serve` (Settings.malloc_arenas) caps the arenas that threads allocate from:
    four threads get arenas of their own without it, and share one with it."""

    def heaps(cap: int) -> tuple[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", _ARENAS_PROBE, str(cap)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        return out[0], int(out[1])

    assert heaps(1) == ("True", 1)
    capped, uncapped = heaps(0)
    assert capped == "False" and uncapped > 1
    assert Settings(secret_key="x" * 32).malloc_arenas == 2
