"""docker-compose.yml, run without a Docker engine: one process per container, each on its own
loopback address (one "host" each), with the load balancer of ``deploy/`` in front.

Nothing is restated here: the test reads ``docker-compose.yml`` and runs each service's
``command`` with the ``switchboard`` entry point (the image's ENTRYPOINT) and exactly its
``environment`` (compose variables interpolated), changing only what a container network
changes: ``0.0.0.0`` becomes the host's own address and a service name the address of the
host running it; a named volume becomes a directory. Ports stay those of the compose file
(every host has its own address, so they do not clash). Services start in ``depends_on``
order, and a ``service_healthy`` dependency waits until that service's own ``healthcheck``
command passes. The ``lb`` service runs Debian's HAProxy on ``deploy/haproxy.cfg`` with its
``bind`` and ``server`` addresses rewritten to loopback.

Clients (python-socketio, websocket transport) connect through the load balancer only.
Every wait is bounded: handshakes, acks, events, or polls with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import socketio
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import WebSocketException

from tests.support.cluster import JWT_SECRET, token
from tests.support.compose import depends_on, interpolate, read_compose
from tests.support.peer import QueuedPeer, user_auth
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
#: What the image's ``ENTRYPOINT ["switchboard"]`` runs: the installed console script.
ENTRYPOINT = [str(Path(sys.executable).with_name("switchboard"))]
if not Path(ENTRYPOINT[0]).exists():  # pragma: no cover - a venv always has it
    ENTRYPOINT = [sys.executable, "-m", "switchboard"]
WAIT = 10.0
START_WAIT = 40.0
#: What `docker compose up` would be given: the secret the compose file requires.
COMPOSE_ENV = {"SWITCHBOARD_JWT_SECRET": JWT_SECRET}


# -- reading the compose file ---------------------------------------------------------------
def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    return interpolate(read_compose(), env)


def environment(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in env.items()}


def start_order(services: dict[str, Any]) -> list[str]:
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        assert name not in path, f"depends_on cycle: {path}"
        if name in order:
            return
        for dep in depends_on(services[name]):
            visit(dep, (*path, name))
        order.append(name)

    for name in services:
        visit(name)
    return order


def port_free(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


# -- the hosts --------------------------------------------------------------------------------
@dataclass
class Host:
    """One compose service as a process on its own loopback address."""

    name: str
    address: str
    spec: dict[str, Any]
    workdir: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        # A container's environment is its image's plus the compose file's: nothing of the
        # developer's shell (no stray SWITCHBOARD_* variable) reaches the part.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env.update(self.env)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=self.workdir, start_new_session=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.process is not None
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(5)

    def stop(self, grace: float) -> int | None:
        """``docker stop``: the stop signal (SIGTERM unless ``stop_signal`` says otherwise),
        then SIGKILL after the stop grace period."""
        if self.process is None:
            return None
        if self.running:  # to the container's main process, as docker does
            os.kill(self.process.pid, signal.Signals[self.spec.get("stop_signal", "SIGTERM")])
        try:
            return self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(5)
            return None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def healthy(self) -> bool:
        """The compose ``healthcheck`` command, run against this host's address."""
        check = self.spec.get("healthcheck")
        if not check:
            return self.running
        test = check["test"]
        assert test[0] == "CMD", test
        argv = [sys.executable if test[1] == "python" else test[1],
                *(arg.replace("127.0.0.1", self.address) for arg in test[2:])]
        try:
            return subprocess.run(argv, capture_output=True, timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False


def stop_grace(spec: dict[str, Any]) -> float:
    text = str(spec.get("stop_grace_period", "10s"))
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text)
    assert match, f"stop_grace_period {text!r}"
    return float(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match[2] or "s"]


class Deployment:
    """docker-compose.yml as processes; ``hosts[name]`` for each compose service."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.compose = load_compose(COMPOSE_ENV)
        self.services: dict[str, Any] = self.compose["services"]
        self.order = start_order(self.services)
        self.addresses = self._addresses()
        #: Fixed container addresses (``ipv4_address``) → the loopback address of their host.
        self.static = {
            net["ipv4_address"]: self.addresses[name]
            for name, spec in self.services.items()
            if isinstance(spec.get("networks"), dict)
            for net in spec["networks"].values() if net and "ipv4_address" in net
        }
        self.hosts = {name: self._host(name) for name in self.order}

    # -- planning -----------------------------------------------------------------------------
    def _addresses(self) -> dict[str, str]:
        """127.0.N.2, .3, ... in the compose file's order (broker .2, auth .3, ...,
        gateways .7-.9, lb .10), in the first 127.0.N.0/24 whose ports are all free."""
        names = list(self.services)
        for subnet in range(0, 50):
            addresses = {name: f"127.0.{subnet}.{i}" for i, name in enumerate(names, start=2)}
            ports = self._ports()
            if all(port_free(addresses[n], p) for n in names for p in ports.get(n, ())):
                return addresses
        raise RuntimeError("no free loopback subnet for the compose deployment")

    def _ports(self) -> dict[str, set[int]]:
        found: dict[str, set[int]] = defaultdict(set)
        for name, spec in self.services.items():
            for value in environment(spec).values():
                found[name].update(int(p) for p in re.findall(r"tcp://0\.0\.0\.0:(\d+)", value))
            env = environment(spec)
            for key in ("SWITCHBOARD_PORT", "SWITCHBOARD_METRICS_PORT"):
                if env.get(key, "0") != "0":
                    found[name].add(int(env[key]))
            for port in spec.get("ports", ()):
                found[name].add(int(str(port).rsplit(":", 1)[1].split("/")[0]))
        return found

    def _rewrite(self, host: str, value: str, volumes: dict[str, Path]) -> str:
        """A container value as seen on loopback: addresses and volume paths."""

        def address(match: re.Match[str]) -> str:
            name = match[1]
            return host if name == "0.0.0.0" else self.addresses.get(name, name)

        value = re.sub(r"(?<=//)([A-Za-z0-9_.-]+)(?=:\d)", address, value)
        for fixed, loopback in self.static.items():
            value = re.sub(rf"(?<![\d.]){re.escape(fixed)}(?![\d.])", loopback, value)
        if value == "0.0.0.0":
            value = host
        for target, source in volumes.items():
            if value == target or value.startswith(target.rstrip("/") + "/"):
                value = str(source) + value[len(target.rstrip("/")):]
        return value

    def _host(self, name: str) -> Host:
        spec = self.services[name]
        address = self.addresses[name]
        workdir = self.workdir / name
        volumes: dict[str, Path] = {}
        for volume in spec.get("volumes", ()):
            source, target = str(volume).split(":")[:2]
            volumes[target] = (ROOT / source if source.startswith(".")
                               else self.workdir / "volumes" / source)
        host = Host(name, address, spec, workdir)
        command = [str(c) for c in spec["command"]]
        if spec.get("build"):  # our image: ENTRYPOINT ["switchboard"] + command
            host.env = {k: self._rewrite(address, v, volumes)
                        for k, v in environment(spec).items()}
            for path in volumes.values():
                path.mkdir(parents=True, exist_ok=True)
            host.argv = [*ENTRYPOINT, *command]
        else:
            assert command[0] == "haproxy", f"{name}: only our image and HAProxy are known"
            config = next(src for target, src in volumes.items() if target.endswith(".cfg"))
            host.argv = self._haproxy(address, config, workdir)
        return host

    def _haproxy(self, address: str, source: Path, workdir: Path) -> list[str]:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            if os.environ.get("CI"):
                pytest.fail("haproxy is not installed (scripts/ensure-system-deps installs it)")
            pytest.skip("haproxy is not installed (run scripts/ensure-system-deps)")
        config = source.read_text()
        config = re.sub(r"(?m)^(\s*bind\s+):(\d+)", rf"\g<1>{address}:\2", config)
        # Its connections to the gateways come from its own address, as from a container's.
        config = re.sub(r"(?m)^defaults\s*$", f"defaults\n    source {address}", config)

        def server(match: re.Match[str]) -> str:
            return f"{match[1]}{self.addresses[match[2]]}:{match[3]}"

        config = re.sub(r"(?m)^(\s*server\s+\S+\s+)([A-Za-z0-9_-]+):(\d+)", server, config)
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "haproxy.cfg"
        path.write_text(config)
        check = subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        # The official image's entrypoint runs `haproxy -W -db` (master-worker, foreground).
        return [binary, "-W", "-db", "-f", str(path)]

    # -- running ------------------------------------------------------------------------------
    def start(self) -> None:
        healthy: set[str] = set()
        for name in self.order:
            for dep, condition in depends_on(self.services[name]).items():
                if condition == "service_healthy" and dep not in healthy:
                    self.wait_healthy(dep)
                    healthy.add(dep)
            self.hosts[name].start()
        for name in self.order:
            self.wait_healthy(name)
        self.wait_balanced()

    def wait_healthy(self, name: str, timeout: float = START_WAIT) -> None:
        host = self.hosts[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not host.running:
                break
            if host.healthy():
                return
            time.sleep(0.1)
        raise AssertionError(f"{name} not healthy\n{self.logs()}")

    def gateways(self) -> list[str]:
        return [n for n, s in self.services.items() if s.get("command") == ["gateway"]]

    def gateway_url(self, name: str) -> str:
        return f"http://{self.addresses[name]}:{environment(self.services[name])['SWITCHBOARD_PORT']}"

    def gateway_id(self, name: str) -> str:
        return environment(self.services[name])["SWITCHBOARD_GATEWAY_ID"]

    @property
    def lb(self) -> str:
        name = next(n for n, s in self.services.items() if not s.get("build"))
        return name

    @property
    def lb_url(self) -> str:
        published = str(self.services[self.lb]["ports"][0])
        return f"http://{self.addresses[self.lb]}:{published.rsplit(':', 1)[1]}"

    def lb_servers(self) -> dict[str, str]:
        """HAProxy's view of the gateways (its stats page as CSV): server → status."""
        stats = next(str(p) for p in self.services[self.lb]["ports"] if "8404" in str(p))
        url = f"http://{self.addresses[self.lb]}:{stats.rsplit(':', 1)[1]}/;csv"
        with urllib.request.urlopen(url, timeout=2) as response:
            rows = response.read().decode().splitlines()
        header = rows[0].lstrip("# ").split(",")
        out = {}
        for row in rows[1:]:
            cells = dict(zip(header, row.split(","), strict=False))
            if cells.get("svname") not in ("FRONTEND", "BACKEND", None):
                out[cells["svname"]] = cells["status"]
        return out

    def wait_balanced(self, timeout: float = START_WAIT) -> None:
        """Until HAProxy has every gateway of the compose file up."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.lb_servers()
                if last and all(last.get(g) == "UP" for g in self.gateways()):
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"HAProxy has not every gateway up: {last}\n{self.logs()}")

    def restart(self, name: str) -> Host:
        """``restart: unless-stopped``: the same command and environment again."""
        old = self.hosts[name]
        host = Host(name, old.address, old.spec, old.workdir, old.argv, old.env)
        self.hosts[name] = host
        host.start()
        return host

    def stop(self) -> dict[str, int | None]:
        """``docker compose down``: dependents first, each with its stop grace period."""
        codes = {}
        for name in reversed(self.order):
            codes[name] = self.hosts[name].stop(stop_grace(self.services[name]))
        return codes

    def logs(self) -> str:
        return "\n".join(f"--- {h.name}\n{h.output()[-2000:]}" for h in self.hosts.values())


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    deployment = Deployment(Path(tmp_path_factory.mktemp("compose")))
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()


# -- clients ----------------------------------------------------------------------------------
def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


class Peer(QueuedPeer):
    """User ``user_id`` on ``/``, with python-socketio's own reconnection if asked for (quick
    retries). Its connects and disconnects are queued as the events ``connect`` and
    ``disconnect``."""

    def __init__(self, user_id: str, reconnection: bool = False) -> None:
        super().__init__(user_id, socketio.AsyncClient(
            reconnection=reconnection, reconnection_delay=0.1, reconnection_delay_max=0.5,
            randomization_factor=0.2), auth=user_auth(user_id))


#: Between two polls that are client events: moderation allows a user 20 events per 10 s.
EVENT_POLL = 0.6
#: What a poll retries: an ack that timed out, a connection refused or cut, an answer not
#: shaped yet.
RETRY = (socketio.exceptions.TimeoutError, WebSocketException, OSError, KeyError, TypeError)


async def connect_all(url: str, users: list[str], reconnection: bool = False) -> list[Peer]:
    peers = []
    for user_id in users:  # one at a time: leastconn sees each connection before the next
        peer = Peer(user_id, reconnection)
        peers.append(peer)
        await peer.connect(url)
    return peers


async def welcome_server(peer: Peer) -> str:
    welcome = await peer.next("welcome")
    assert welcome["socketId"] == peer.sid
    return str(welcome["serverId"])


# -- tests ------------------------------------------------------------------------------------
async def test_clients_spread_over_the_gateways_and_chat_crosses_them(
    deployment: Deployment,
) -> None:
    gateways = deployment.gateways()
    ids = {deployment.gateway_id(g) for g in gateways}
    assert len(gateways) == 3 and len(ids) == 3
    users = [f"spread-{i}" for i in range(2 * len(gateways))]
    peers = await connect_all(deployment.lb_url, users)
    try:
        servers = [await welcome_server(p) for p in peers]
        # No sticky sessions, least connections: every gateway takes its share.
        assert Counter(servers) == dict.fromkeys(ids, 2), servers
        for gateway in gateways:
            stats = get_json(deployment.gateway_url(gateway) + "/stats")
            assert stats["gateway"] == deployment.gateway_id(gateway)
            assert stats["namespaces"].get("/") == 2, stats
            health = get_json(deployment.gateway_url(gateway) + "/health")
            assert health["status"] == "healthy", health

        first = peers[0]
        assert await first.call("create room", {"roomId": "compose", "roomName": "Compose"}) == {
            "success": True, "roomId": "compose"}
        for count, peer in enumerate(peers, start=1):
            assert await peer.call("join room", {"roomId": "compose"}) == {
                "success": True, "roomId": "compose"}
            assert (await peer.next("room joined"))["userCount"] == count
        for sender in peers:  # from each gateway to the others (and its own)
            content = f"hello from {sender.name}"
            ack = await sender.call("chat message", {"roomId": "compose", "content": content})
            assert ack["success"] is True
            for peer in peers:
                if peer is not sender:
                    got = await peer.next("chat message")
                    assert (got["content"], got["from"]) == (content, sender.name)
        online = await first.call("get online users")
        assert sorted(u["id"] for u in online["users"]) == sorted(users)
    finally:
        await asyncio.gather(*(p.close() for p in peers))


async def test_killed_gateway_clients_reconnect_through_the_balancer(
    deployment: Deployment,
) -> None:
    """kill -9 of a gateway: its clients' own reconnection goes through HAProxy to the other
    gateways; within the room service's gateway timeout presence and the room's count are
    right again (each user once, with its new socket). The gateway then comes back
    (``restart: unless-stopped``) and takes new connections again."""
    room_env = environment(deployment.services["room-0"])
    gateway_timeout = float(room_env["SWITCHBOARD_GATEWAY_TIMEOUT"])
    users = [f"phoenix-{i}" for i in range(6)]
    peers = await connect_all(deployment.lb_url, users, reconnection=True)
    try:
        for peer in peers:
            await peer.next("connect")
        servers = {p.name: await welcome_server(p) for p in peers}
        assert await peers[0].call("create room", {"roomId": "phoenix", "roomName": "P"}) == {
            "success": True, "roomId": "phoenix"}
        for peer in peers:
            assert (await peer.call("join room", {"roomId": "phoenix"}))["success"] is True

        victim = deployment.gateways()[1]
        victim_id = deployment.gateway_id(victim)
        moved = [p for p in peers if servers[p.name] == victim_id]
        stayed = [p for p in peers if servers[p.name] != victim_id]
        assert moved and stayed
        old_sids = {p.name: p.sid for p in moved}
        deployment.hosts[victim].kill()
        killed = time.monotonic()

        for peer in moved:  # python-socketio's own reconnection, through the balancer
            await peer.next("disconnect")
            await peer.next("connect", timeout=WAIT)
            assert peer.sid != old_sids[peer.name]
            assert await welcome_server(peer) != victim_id
            assert (await peer.call("join room", {"roomId": "phoenix"}))["success"] is True

        def current() -> list[str]:
            return sorted(p.sid for p in peers)

        asking = itertools.cycle(stayed)  # spread the polls over users (event rate limit)

        async def online() -> list[str]:
            ack = await next(asking).call("get online users")
            return sorted(u["socketId"] for u in ack["users"])

        await poll_until(online, lambda sids: sids == current(),
                         "every user online once, with its new socket", gateway_timeout + 5,
                         EVENT_POLL, retry_on=RETRY)
        info = await stayed[0].call("get room info", "phoenix")
        assert info["userCount"] == len(peers)
        assert sorted(u["socketId"] for u in info["users"]) == current()
        noticed = time.monotonic() - killed
        assert noticed < gateway_timeout + 5, f"presence right after {noticed:.1f}s"
        # The survivors and the reconnected clients chat as before.
        ack = await moved[0].call("chat message", {"roomId": "phoenix", "content": "back"})
        assert ack["success"] is True
        for peer in peers:
            if peer is not moved[0]:
                assert (await peer.next("chat message"))["content"] == "back"

        # The restart policy brings the gateway back; the balancer sends it new clients.
        deployment.restart(victim)
        deployment.wait_healthy(victim)
        deployment.wait_balanced()
        newcomer = (await connect_all(deployment.lb_url, ["phoenix-late"]))[0]
        peers.append(newcomer)
        assert await welcome_server(newcomer) == victim_id  # the least loaded gateway
    finally:
        await asyncio.gather(*(p.close() for p in peers))


async def raw_connect(url: str, source: str, user_id: str | None) -> str:
    """One Engine.IO/Socket.IO handshake over a bare WebSocket from ``source`` (a loopback
    address of the client's own), then a CONNECT to ``/`` with ``user_id``'s token (None:
    an anonymous one to ``/game``); its answer's packet (``40…`` or ``44…``), namespace
    prefix removed."""
    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    prefix = "" if user_id is not None else "/game,"
    async with asyncio.timeout(WAIT), ws_connect(ws_url, local_addr=(source, 0)) as ws:
        opened = await ws.recv()
        assert isinstance(opened, str) and opened.startswith("0{"), opened
        auth = {"token": token(user_id, user_id)} if user_id is not None else {}
        await ws.send(f"40{prefix}" + json.dumps(auth))
        while True:
            packet = await ws.recv()
            if isinstance(packet, str) and packet.startswith((f"40{prefix}", f"44{prefix}")):
                return packet[:2] + packet[2 + len(prefix):]


async def test_connect_limit_is_per_client_behind_the_balancer(
    deployment: Deployment,
) -> None:
    """Behind HAProxy the gateways see one peer; with the compose file's
    SWITCHBOARD_TRUSTED_PROXIES they take the client from X-Forwarded-For, so one client
    using up moderation's connect limit for anonymous sockets (per address: users with a
    token have theirs each) costs another client (another address) nothing."""
    base = deployment.addresses[deployment.lb].rsplit(".", 1)[0]
    flooder, bystander = f"{base}.200", f"{base}.201"
    try:
        refused = None
        for _ in range(200):  # the compose file keeps the default limit (50 a minute)
            answer = await raw_connect(deployment.lb_url, flooder, None)
            if answer.startswith("44"):
                refused = json.loads(answer[2:])
                break
        assert refused == {"message": "Rate limit exceeded"}, "the flooder was never limited"
        # Another client, from another address, has used none of its allowance.
        answer = await raw_connect(deployment.lb_url, bystander, None)
        assert answer.startswith("40"), f"a different client was refused: {answer}"
    finally:
        # Forget the flood (the limits live in the moderation service's memory; a
        # `docker compose restart moderation`) and wait until every gateway lets a client in.
        moderation = deployment.hosts["moderation"]
        assert moderation.stop(stop_grace(moderation.spec)) == 0
        deployment.restart("moderation")
        deployment.wait_healthy("moderation")
        for gateway in deployment.gateways():
            await poll_until(lambda g=gateway: raw_connect(  # type: ignore[misc]
                                 deployment.gateway_url(g), "127.0.0.1", "returning"),
                             lambda answer: answer.startswith("40"), f"{gateway} lets clients in",
                             WAIT, interval=0.1, retry_on=RETRY)


async def test_compose_down_stops_every_part_cleanly(deployment: Deployment) -> None:
    """``docker compose down``: SIGTERM in reverse dependency order; every part exits 0
    within its ``stop_grace_period`` (a SIGKILL would show as None). A client of a gateway
    (directly: the balancer goes first) is told the server is shutting down."""
    peer = await Peer("last-one").connect(deployment.gateway_url(deployment.gateways()[0]))
    try:
        await welcome_server(peer)
        codes = deployment.stop()
        assert codes == dict.fromkeys(deployment.order, 0), f"{codes}\n{deployment.logs()}"
        shutdown = await peer.next("server shutdown")
        assert isinstance(shutdown["message"], str) and shutdown["message"]
    finally:
        await peer.close()
