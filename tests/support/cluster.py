"""Real processes for integration tests: broker, services and gateways started with the same
``switchboard`` commands a deployment uses, on free loopback ports, stopped at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port

CMD = [sys.executable, "-m", "switchboard"]
ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0


@dataclass
class Part:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True, cwd=ROOT)

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.process.wait(5)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(5)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def http_get(url: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str) -> Any:
    return json.loads(http_get(url)[2])


class Cluster:
    """Broker + services + gateways as processes; ``url(i)`` is gateway i's base URL."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1", brokers: int = 1) -> None:
        self.workdir = workdir
        self.host = host
        self.parts: dict[str, Part] = {}
        #: Each broker's two endpoints, in the order every part lists them.
        self.broker_pubs = [f"tcp://{host}:{free_port(host)}" for _ in range(brokers)]
        self.broker_subs = [f"tcp://{host}:{free_port(host)}" for _ in range(brokers)]
        #: As an option takes them: every broker, between commas.
        self.broker_pub = ",".join(self.broker_pubs)
        self.broker_sub = ",".join(self.broker_subs)
        #: Started services' endpoints (the gateways ask these).
        self.services: dict[str, str] = {}
        #: Endpoints of the built-in services, chosen before they start: each service is
        #: told all of them, as filters pass events on to owners started after them.
        self.reserved = {name: f"tcp://{host}:{free_port(host)}"
                         for name in ("auth", "moderation", "room", "game", "recovery")}
        self.gateway_ports: list[int] = []
        #: How each room instance is started (``start_room``): its arguments, environment.
        self.room_argv: dict[str, tuple[tuple[str, ...], dict[str, str] | None]] = {}
        #: Clients of the tests go through this balancer (when set) to the first
        #: ``balanced`` gateways, with these transports (None: the client's defaults).
        self.balancer_url: str | None = None
        self.balanced = 0
        self.transports: list[str] | None = None

    def _part(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Part:
        part = Part(name, argv, self.workdir / "logs" / f"{name}.log", env or {})
        self.parts[name] = part
        part.start()
        return part

    def broker_name(self, k: int = 0) -> str:
        return "broker" if len(self.broker_pubs) == 1 else f"broker-{k}"

    def start_broker(self, k: int = 0, *args: str) -> Part:
        """Broker ``k`` (of several: ``broker-k``), on its endpoints of before."""
        return self._part(self.broker_name(k), [
            *CMD, "broker", "--publish-bind", self.broker_pubs[k],
            "--subscribe-bind", self.broker_subs[k], "--heartbeat-interval", "0.2", *args])

    def start_brokers(self) -> None:
        for k in range(len(self.broker_pubs)):
            self.start_broker(k)

    def start_service(self, name: str, *args: str, env: dict[str, str] | None = None,
                      instance: str = "") -> Part:
        """Service ``name``; ``instance``: under that name (one of a partitioned service's
        instances, e.g. ``room-1``)."""
        key = instance or name
        endpoint = (self.services.get(key) or self.reserved.get(key)
                    or f"tcp://{self.host}:{free_port(self.host)}")
        self.services[key] = endpoint
        short = key.rpartition(".")[2]
        others = {**self.reserved, **{n.rpartition(".")[2]: e for n, e in self.services.items()}}
        peers = [arg for other, address in others.items()
                 for arg in ("--services", f"{other}={address}")]
        return self._part(short, [*CMD, "service", name, "--bind", endpoint, *peers,
                                  "--broker-pub", self.broker_pub, *args], env)

    def start_room(self, name: str) -> Part:
        """Room instance ``name`` as ``start_chat_cluster`` configured it."""
        args, env = self.room_argv[name]
        return self.start_service("room", *args, env=env, instance=name)

    def start_gateway(self, *args: str, port: int | None = None, wait: bool = True) -> Part:
        """A gateway on ``port`` (or a free one); with ``wait``, once its /health is 200."""
        port = port or free_port(self.host)
        if port not in self.gateway_ports:
            self.gateway_ports.append(port)
        argv = [*CMD, "gateway", "--host", self.host, "--port", str(port),
                "--gateway-id", f"gw{port}", "--broker-sub", self.broker_sub,
                "--broker-pub", self.broker_pub,
                "--heartbeat-interval", "0.2"]
        for name, endpoint in self.services.items():
            argv += ["--services", f"{name.rpartition('.')[2]}={endpoint}"]
        part = self._part(f"gateway-{port}", [*argv, *args])
        if wait:
            self.wait_ready(port)
        return part

    def url(self, index: int = 0) -> str:
        return f"http://{self.host}:{self.gateway_ports[index]}"

    def client_url(self, index: int = 0) -> str:
        """Where a test's client for "gateway ``index``" connects: the balancer in front
        of the gateways when there is one (any gateway may then serve it)."""
        if self.balancer_url is not None and index < self.balanced:
            return self.balancer_url
        return self.url(index)

    def wait_ready(self, port: int, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.host}:{port}/health"
        while time.monotonic() < deadline:
            try:
                status, _, _ = http_get(url, timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        logs = "\n".join(f"--- {p.name}\n{p.output()[-3000:]}" for p in self.parts.values())
        raise TimeoutError(f"gateway on port {port} not healthy in {timeout}s\n{logs}")

    def stats(self, index: int = 0) -> Any:
        return get_json(self.url(index) + "/stats")

    def stop(self) -> None:
        # Gateways first, then services, then the broker: the order `up` uses.
        for part in reversed(list(self.parts.values())):
            part.stop()


JWT_SECRET = "test-secret-0123456789-0123456789-abcdef"


def token(user_id: str, username: str, role: str = "user", ttl: int = 3600,
          secret: str = JWT_SECRET) -> str:
    from switchboard.shared.tokens import issue_token

    return issue_token(secret, user_id, username, role=role, ttl=ttl)


def start_chat_cluster(workdir: Path, gateways: int = 2, moderation_args: tuple[str, ...] = (),
                       room_args: tuple[str, ...] = (),
                       gateway_args: tuple[str, ...] = (),
                       auth_args: tuple[str, ...] = (),
                       recovery: tuple[str, ...] = (),
                       recovery_args: tuple[str, ...] = (),
                       room_instances: int = 1, brokers: int = 1,
                       store: str | None = None, rooms_started: int | None = None
                       ) -> Cluster:
    """The full application (auth, moderation, room, game) behind ``gateways`` gateways;
    with ``recovery`` namespaces, the recovery service too (``recovery_args``) and the
    gateways configured for it.

    Every test client comes from 127.0.0.1, so the per-IP connect limit is raised here; tests
    of that limit start their own cluster with a low one. ``gateway_args`` go to every gateway
    (e.g. ``("--demo", "--jwt-secret", JWT_SECRET)``). ``room_instances`` > 1: rooms and
    presence partitioned over ``room-0``, ``room-1``... (each with its own SQLite file).
    ``brokers`` > 1: publications spread over ``broker-0``, ``broker-1``... by topic.
    ``store``: the PostgreSQL URL the room instances and moderation share, as
    ``SWITCHBOARD_STORE`` (None: a SQLite file each). ``rooms_started``: only the first so
    many instances start; every part knows the others' endpoints (``start_room`` later).
    """
    cluster = Cluster(workdir, brokers=brokers)
    env = {"SWITCHBOARD_JWT_SECRET": JWT_SECRET}
    stored = {**env, "SWITCHBOARD_STORE": store} if store else env
    cluster.start_brokers()
    cluster.start_service("auth", *auth_args, env=env)
    cluster.start_service(
        "moderation", "--moderation-db", str(workdir / "moderation.sqlite3"),
        "--connect-limit", "100000", *moderation_args, env=stored,
    )
    rooms = ["room"] if room_instances == 1 else [f"room-{i}" for i in range(room_instances)]
    for n, name in enumerate(rooms):
        cluster.room_argv[name] = (
            ("--room-db", str(workdir / f"{name}.sqlite3"), "--password-time-cost", "1",
             "--password-memory-kib", "8192", "--room-instance", name,
             "--room-instances", ",".join(rooms), *room_args), stored)
        if rooms_started is None or n < rooms_started:
            cluster.start_room(name)
        else:
            cluster.services[name] = f"tcp://{cluster.host}:{free_port(cluster.host)}"
    cluster.start_service("game", env=env)
    namespaces = tuple(f"--recovery-namespaces={ns}" for ns in recovery)
    if recovery:
        cluster.start_service("recovery", *namespaces, "--broker-sub", cluster.broker_sub,
                              *recovery_args, env=env)
    for _ in range(gateways):
        cluster.start_gateway(*gateway_args, *namespaces)
    return cluster


def start_mini_cluster(workdir: Path, *gateway_args: str) -> Cluster:
    """Broker + the miniapp service (echo, rooms) + one gateway with ``gateway_args``."""
    cluster = Cluster(workdir)
    try:
        cluster.start_broker()
        cluster.start_service("tests.support.miniapp")
        cluster.start_gateway(*gateway_args)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def http_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample of the gateway's /metrics (0 when absent)."""
    for family in text_string_to_metric_families(http_text(url + "/metrics")):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def gateway_part(cluster: Cluster, index: int) -> Part:
    return cluster.parts[f"gateway-{cluster.gateway_ports[index]}"]
