"""Settings: the only place that reads environment variables (prefix `RETRORUN_`)."""

from __future__ import annotations

import re
import secrets
from functools import cached_property
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from game.challenges import WEEKLY_ROTATION, Template, rotation_of
from game.safety import SafetyPolicy

DEFAULT_SECRET = "change-me"


class Rate(NamedTuple):
    """A token bucket: at most `limit` requests at once, refilled evenly over `window_s`."""

    limit: int
    window_s: float

    @property
    def per_second(self) -> float:
        return self.limit / self.window_s

    def __str__(self) -> str:
        return f"{self.limit}/{self.window_s:g}s"


_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0}
_UNITS |= {"h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]*)\s*$")


def parse_rate(value: Any) -> Rate:
    """`"10/min"`, `"200/10s"`, `"3/0.5s"` (or a `Rate`, or a `[count, window_s]` pair)."""
    if isinstance(value, str):
        m = _RATE.match(value.lower())
        if m is None or m.group(3) not in _UNITS:
            raise ValueError(f"{value!r} is not a rate: write COUNT/WINDOW, e.g. 10/min or 200/10s")
        count, window = int(m.group(1)), float(m.group(2) or 1) * _UNITS[m.group(3)]
    elif isinstance(value, list | tuple) and len(value) == 2:
        count, window = int(value[0]), float(value[1])
    else:
        raise ValueError("a rate is COUNT/WINDOW, e.g. 10/min")
    if count < 1 or window <= 0:
        raise ValueError("a rate needs a count of at least 1 and a positive window")
    return Rate(count, window)


#: A `Rate` setting, written "COUNT/WINDOW" in the environment.
RateSetting = Annotated[Rate, NoDecode, BeforeValidator(parse_rate), PlainSerializer(str)]


class Settings(BaseSettings):
    """Everything an operator can configure. Defaults give the embedded setup (SQLite, no Redis)."""

    model_config = SettingsConfigDict(env_prefix="RETRORUN_", extra="ignore")

    database_url: str = "sqlite:///retrorun.db"
    redis_url: str | None = None
    secret_key: str = DEFAULT_SECRET
    debug: bool = False
    allowed_origins: list[str] = Field(default_factory=list)
    token_lifetime_s: int = Field(default=7 * 24 * 3600, gt=0)
    #: Failed logins per handle before the account is throttled for `login_lockout_s`.
    login_max_failures: int = Field(default=5, gt=0)
    login_lockout_s: int = Field(default=60, ge=0)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    #: Most fixes one uploaded run may carry (13.9 hours at 1 Hz).
    max_fixes: int = Field(default=50_000, gt=1)
    #: Apply Alembic migrations at start-up (the embedded default does; production runs
    #: `retrorun migrate` and the server refuses an outdated schema).
    auto_migrate: bool | None = None
    log_json: bool = True
    #: Time zone of the weekly challenge rotation (ISO weeks start Monday 00:00 there).
    weekly_tz: str = "UTC"
    #: The weekly challenge templates to rotate through, by key, in order (JSON list; default:
    #: all of them, game/challenges.py `WEEKLY_ROTATION`). E.g. `["reverse-10k",
    #: "three-sessions"]` for a server without drill weeks.
    weekly_rotation: list[str] = Field(default_factory=lambda: [t.key for t in WEEKLY_ROTATION])
    scheduler_interval_s: float = Field(default=60.0, gt=0)
    #: Live race standings broadcasts per second (1 to 4).
    room_tick_hz: float = Field(default=1.0, ge=1, le=4)
    #: Spotter safety alerts (game/safety.py): no credited distance for this long in a race, a
    #: sudden stop that lasts this long, the runner's window to cancel a false alarm, and the
    #: time after which an alert nobody acknowledged is escalated.
    safety_no_progress_s: float = Field(default=60.0, gt=0)
    safety_fall_stopped_s: float = Field(default=5.0, gt=0)
    safety_cancel_window_s: float = Field(default=15.0, ge=0)
    safety_escalate_s: float = Field(default=60.0, gt=0)
    #: Abuse limits (server/limits.py): token buckets per client address (per account for run
    #: uploads), written "COUNT/WINDOW" (`10/min`, `200/10s`): at most COUNT at once, refilled
    #: evenly over WINDOW. In-process: with several server processes each keeps its own buckets.
    rate_limits_enabled: bool = True
    rate_limit_login: RateSetting = Rate(10, 60.0)
    #: 10 (not 5) so `retrorun demo`'s 8 simulated runners can sign up from one address.
    rate_limit_register: RateSetting = Rate(10, 60.0)
    rate_limit_runs: RateSetting = Rate(30, 60.0)
    #: Every other request: 20/s sustained, bursts of 200 (a first page load of the phone client
    #: fetches its ~20 files twice: the page and the service worker's precache).
    rate_limit_default: RateSetting = Rate(200, 10.0)
    #: Addresses or networks (`10.0.0.0/8`) of reverse proxies whose `X-Forwarded-For` is trusted;
    #: from any other peer the header is ignored and the socket address is the client.
    trusted_proxies: list[str] = Field(default_factory=list)
    #: Slow clients (server/http_guard.py): a request's line and headers must arrive within
    #: `header_timeout_s` of the connection opening (or of the request's first byte on a
    #: kept-alive connection), and be at most `header_max_bytes` long (else 431).
    header_timeout_s: float = Field(default=10.0, gt=0)
    header_max_bytes: int = Field(default=16 * 1024, ge=1024)
    #: WebSocket keepalive: the server pings every `ws_ping_interval_s` and closes (1011) a
    #: socket whose peer has not answered within `ws_ping_timeout_s` (a stalled network, a
    #: phone gone to sleep), so its room slot is freed.
    ws_ping_interval_s: float = Field(default=15.0, gt=0)
    ws_ping_timeout_s: float = Field(default=10.0, gt=0)
    #: Open room sockets one account (or one share link) may hold in one server process: a
    #: phone, a watch and a tablet with room to spare; more is refused (close 4408).
    ws_max_sockets_per_account: int = Field(default=8, ge=1)
    #: `retrorun serve` only. Once started, everything loaded so far (modules, the app) is moved
    #: out of the cyclic collector's reach (`gc.freeze`), and the young generation is collected
    #: every `gc_gen0` allocations instead of CPython's 700: with thousands of sockets each
    #: collection otherwise walks more objects, more often (a room's tick waits behind it).
    #: 0 keeps CPython's defaults and does not freeze.
    gc_gen0: int = Field(default=20_000, ge=0)
    #: `retrorun serve` only, on glibc: at most this many malloc arenas (`mallopt(M_ARENA_MAX)`,
    #: as the MALLOC_ARENA_MAX variable does). Each thread that allocates otherwise gets its own,
    #: and their free pages are not shared: ~2 KiB more RSS a room socket under load
    #: (docs/benchmarks.md). 0 leaves glibc's default (8 a core).
    malloc_arenas: int = Field(default=2, ge=0, le=64)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for item in v:
            ip_network(item, strict=False)  # ValueError -> a validation error naming the field
        return v

    @field_validator("weekly_rotation")
    @classmethod
    def _known_templates(cls, v: list[str]) -> list[str]:
        rotation_of(v)  # ValueError -> a validation error naming the field
        return v

    def rotation(self) -> tuple[Template, ...]:
        """The weekly rotation's templates."""
        return rotation_of(self.weekly_rotation)

    @field_validator("redis_url")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v or None

    def safety_policy(self) -> SafetyPolicy:
        """The safety thresholds rooms use (the rest of `SafetyPolicy` keeps its defaults)."""
        return SafetyPolicy(
            stopped_s=self.safety_fall_stopped_s,
            no_progress_s=self.safety_no_progress_s,
            cancel_window_s=self.safety_cancel_window_s,
            escalate_after_s=self.safety_escalate_s,
        )

    @cached_property
    def async_database_url(self) -> str:
        """The database URL with the async driver this server uses (aiosqlite or asyncpg)."""
        return to_async_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "sqlite"

    @property
    def sqlite_path(self) -> Path | None:
        url = make_url(self.database_url)
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return None
        return Path(url.database)

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    def resolved(self) -> Settings:
        """Fill in the secret for the embedded default, or refuse to run with the default one.

        On SQLite with no secret configured, a random key is generated once and kept beside the
        database file, so the first command just works and tokens survive restarts.
        """
        if self.secret_key != DEFAULT_SECRET:
            return self
        path = self.sqlite_path
        if path is not None:
            key_file = path.with_name(path.name + ".secret")
            if not key_file.exists():
                key_file.parent.mkdir(parents=True, exist_ok=True)
                key_file.write_text(secrets.token_urlsafe(48))
                key_file.chmod(0o600)
            return self.model_copy(update={"secret_key": key_file.read_text().strip()})
        if self.debug:
            return self
        raise RuntimeError(
            "RETRORUN_SECRET_KEY is not set: refusing to start with the default secret "
            "outside debug mode (set RETRORUN_SECRET_KEY or RETRORUN_DEBUG=true)"
        )


def to_async_url(url: str) -> str:
    """Map a URL a user would type to its async driver (aiosqlite or asyncpg)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(
        f"unsupported database URL scheme {parsed.drivername!r}: use sqlite or postgresql"
    )
