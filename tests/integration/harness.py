"""Throwaway engines for fault tests: a `redis-server` and a PostgreSQL cluster of a test's own,
on free loopback ports, that a test may kill and restart without touching the shared servers.
Plus `start_servers`: `retrorun serve` processes on them."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.integration.test_scale_out import RETRORUN, Proc, _free_port, _wait_ready


class ThrowawayRedis:
    """A `redis-server` without persistence: killed and started again, it comes back empty."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.popen: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        assert exe is not None
        log = (self.workdir / "redis.log").open("ab")
        self.popen = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(100):  # 10 s
            with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
                subprocess.run(
                    ["redis-cli", "-p", str(self.port), "ping"], check=True, capture_output=True
                )
                return
            time.sleep(0.1)
        raise RuntimeError("throwaway redis-server did not start")

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class ThrowawayPostgres:
    """A PostgreSQL cluster (`initdb`, trust auth) in a temporary directory, run with `pg_ctl`
    as the `postgres` system user when the tests run as root (PostgreSQL refuses root)."""

    def __init__(self) -> None:
        bindir = _pg_bin()
        assert bindir is not None
        self.bin = bindir
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="retrorun-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._user = pwd.getpwnam("postgres")
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)

    @staticmethod
    def available() -> bool:
        if _pg_bin() is None:
            return False
        if os.geteuid() != 0:
            return True
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
        return True

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/retrorun"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        user = self._user
        return subprocess.run(
            list(args),
            check=check,
            capture_output=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            cwd=self.dir,
            timeout=120,
        )

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        self.start()
        self._run(
            str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "-d", "postgres", "-c", "CREATE DATABASE retrorun",
        )  # fmt: skip

    def start(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off",
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash: no checkpoint, connections cut, recovery at the next start."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop",
                check=False,
            )  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)


def start_servers(
    count: int, tmp_path: Path, env: dict[str, str], *, tick_hz: int = 4
) -> list[Proc]:
    """`count` `retrorun serve` processes on free loopback ports, ready (or raises)."""
    procs: list[Proc] = []
    full = {
        **os.environ,
        "RETRORUN_LOG_JSON": "false",
        "RETRORUN_ROOM_TICK_HZ": str(tick_hz),
        "RETRORUN_AUTO_MIGRATE": "false",
        **env,
    }
    for i in range(count):
        port = _free_port()
        log = tmp_path / f"server{i}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [RETRORUN, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=full,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(Proc(port, popen, log))
    for proc in procs:
        _wait_ready(proc)
    return procs


def stop_servers(procs: list[Proc]) -> None:
    for i, proc in enumerate(procs):  # shown when a test fails: log lines, not tracebacks
        text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
        lines = [ln for ln in text.splitlines() if ln and not ln[0].isspace()]
        kept = [ln for ln in dict.fromkeys(lines) if "HTTP/1.1" not in ln][-80:]
        print(f"--- server {i} (pid {proc.popen.pid}) ---\n" + "\n".join(kept))
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.popen.wait(15)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(5)
