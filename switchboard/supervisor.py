"""``switchboard up``: every part as a supervised child process on loopback.

Children are the same commands a multi-host deployment runs (``switchboard broker``,
``switchboard service NAME``, ``switchboard gateway``), configured through their options.
Their output is prefixed with the part's name; a child that dies is reported and restarted
(with backoff); SIGINT/SIGTERM stop everything (SIGTERM to each child, SIGKILL after a grace).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from switchboard.shared import ports
from switchboard.shared.config import setting
from switchboard.shared.tokens import DEFAULT_SECRET

log = logging.getLogger("switchboard.up")

PREFIX_COLOURS = ("36", "33", "35", "32", "34", "31", "96", "93", "95", "92")


@dataclass(frozen=True)
class UpConfig:
    host: str = setting("127.0.0.1", "Address the gateways listen on.")
    port: int = setting(ports.GATEWAY_HTTP,
                        "Port of the first gateway; others use the next ports.")
    gateways: int = setting(1, "Number of gateways.")
    conformance: bool = setting(
        False, "Run the configuration the official Socket.IO protocol test suite expects."
    )
    internal_port: int = setting(
        ports.BROKER_PUBLISH,
        "First loopback port for the broker and services (uses the next 20)."
    )
    data_dir: str = setting("var", "Directory for SQLite files.")
    jwt_secret: str = setting(
        DEFAULT_SECRET, "HS256 secret for tokens.", env="SWITCHBOARD_JWT_SECRET"
    )
    ping_interval: float = setting(25.0, "Engine.IO pingInterval, seconds.")
    ping_timeout: float = setting(20.0, "Engine.IO pingTimeout, seconds.")
    max_payload: int = setting(1_000_000, "Engine.IO maxPayload, bytes.")
    gateway_timeout: float = setting(
        5.0, "Seconds without a heartbeat before services drop a gateway's sockets (a gateway "
        "restarted under its id is recognised at once by its new instance id)."
    )
    grace: float = setting(10.0, "Seconds children get to stop before they are killed.")
    demo: bool = setting(
        True, "Demo mode: the gateways issue guest tokens at POST /api/token, so the web pages "
        "sign in with just a name (turn off anywhere real)."
    )


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0


def plan(config: UpConfig) -> list[Child]:
    """The children of ``up``, in start order."""
    base = config.internal_port
    publish, subscribe = f"tcp://127.0.0.1:{base}", f"tcp://127.0.0.1:{base + 1}"
    cmd = [sys.executable, "-m", "switchboard"]
    children = [Child("broker", [*cmd, "broker", "--publish-bind", publish,
                                 "--subscribe-bind", subscribe])]
    names = ["conformance"] if config.conformance else ["auth", "moderation", "room", "game"]
    ping_interval, ping_timeout, max_payload = (
        (0.3, 0.2, 1_000_000) if config.conformance  # what the official suite asserts
        else (config.ping_interval, config.ping_timeout, config.max_payload)
    )
    endpoints = []
    for offset, name in enumerate(names, start=10):
        endpoint = f"tcp://127.0.0.1:{base + offset}"
        endpoints.append(f"{name}={endpoint}")
        argv = [*cmd, "service", name, "--bind", endpoint, "--broker-pub", publish,
                "--gateway-timeout", str(config.gateway_timeout)]
        if name in ("room", "moderation"):
            argv += [f"--{name}-db", os.path.join(config.data_dir, f"{name}.sqlite3")]
        children.append(Child(name, argv, {"SWITCHBOARD_JWT_SECRET": config.jwt_secret}))
    for i in range(config.gateways):
        port = config.port + i
        argv = [*cmd, "gateway", "--host", config.host, "--port", str(port),
                "--gateway-id", f"gw{port}-{secrets.token_hex(2)}",
                "--broker-sub", subscribe, "--broker-pub", publish,
                "--ping-interval", str(ping_interval),
                "--ping-timeout", str(ping_timeout),
                "--max-payload", str(max_payload)]
        for endpoint in endpoints:
            argv += ["--services", endpoint]
        if config.conformance:
            argv += ["--connect-timeout", "2", "--connect-emit-delay", "0.02", "--engine-echo"]
        argv.append("--demo" if config.demo else "--no-demo")
        children.append(Child(f"gateway:{port}", argv,
                              {"SWITCHBOARD_JWT_SECRET": config.jwt_secret}))
    return children


class Supervisor:
    def __init__(self, children: list[Child], log_level: str, log_json: bool,
                 grace: float) -> None:
        self.children = children
        self.log_level = log_level
        self.log_json = log_json
        self.grace = grace
        self.stopping = threading.Event()
        self.width = max(len(c.name) for c in children)

    def start(self, child: Child) -> None:
        env = {**os.environ, **child.env, "SWITCHBOARD_LOG_LEVEL": self.log_level,
               "SWITCHBOARD_LOG_JSON": "1" if self.log_json else "0",
               "PYTHONUNBUFFERED": "1"}
        child.process = subprocess.Popen(
            child.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
        )
        child.started = time.monotonic()
        threading.Thread(target=self._pump, args=(child, child.process), daemon=True).start()

    def _pump(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        colour = PREFIX_COLOURS[self.children.index(child) % len(PREFIX_COLOURS)]
        tty = sys.stdout.isatty()
        label = child.name.ljust(self.width)
        prefix = f"\x1b[{colour}m{label} |\x1b[0m " if tty else f"{label} | "
        assert process.stdout is not None
        for raw in process.stdout:
            sys.stdout.write(prefix + raw.decode(errors="replace"))
            sys.stdout.flush()

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        for child in self.children:
            self.start(child)
        while not self.stopping.wait(0.2):
            for child in self.children:
                assert child.process is not None
                code = child.process.poll()
                if code is None:
                    continue
                # Restart with backoff; a child that keeps crashing at once waits longer.
                uptime = time.monotonic() - child.started
                child.restarts = child.restarts + 1 if uptime < 10 else 1
                delay = min(0.5 * 2 ** (child.restarts - 1), 10.0)
                log.error("%s exited with code %s after %.1fs; restarting in %.1fs",
                          child.name, code, uptime, delay)
                if self.stopping.wait(delay):
                    break
                self.start(child)
                log.info("%s restarted (pid %d)", child.name, child.process.pid)
        self.stop()
        return 0

    def stop(self) -> None:
        log.info("stopping %d parts", len(self.children))
        # Gateways first (they drain clients), then services, then the broker.
        for child in reversed(self.children):
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for child in reversed(self.children):
            if child.process is None:
                continue
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                child.process.kill()
                child.process.wait(5)
        log.info("all parts stopped")


def wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status in (200, 503))
        except OSError:
            time.sleep(0.1)
    return False


def run(config: UpConfig, log_level: str = "info", log_json: bool = False) -> int:
    os.makedirs(config.data_dir, exist_ok=True)
    supervisor = Supervisor(plan(config), log_level, log_json, config.grace)

    def announce() -> None:
        for i in range(config.gateways):
            url = f"http://{config.host}:{config.port + i}"
            if wait_http(url + "/health", 30):
                log.info("ready: %s (socket.io path /socket.io/)", url)

    threading.Thread(target=announce, daemon=True).start()
    return supervisor.run()
