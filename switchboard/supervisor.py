"""``switchboard up``: every part as a supervised child process on loopback.

Children are the same commands a multi-host deployment runs (``switchboard broker``,
``switchboard service NAME``, ``switchboard gateway``), configured through their options.
Their output is prefixed with the part's name; a child that dies is reported and restarted
(with backoff); SIGINT/SIGTERM stop everything (SIGTERM to each child, SIGKILL after a grace).

Three rules keep a crash from leaving a mess:

- **A stop every time.** The signal handler only records the signal; the supervising loop
  sleeps in ``select`` on a wake-up pipe (``signal.set_wakeup_fd``) and acts on it. (A handler
  that takes a lock, as ``threading.Event.set`` does, deadlocks when a second signal arrives
  while the main thread holds that lock: ``make`` forwards SIGTERM to its child, so stopping
  ``make up``'s process group delivers two.)
- **No orphans.** Children die with the supervisor however it dies: each is started with
  ``SWITCHBOARD_SUPERVISOR_PID`` and asks the kernel for SIGKILL when its parent goes
  (:func:`~switchboard.shared.process.die_with_supervisor`).
- **No half start.** Every port ``up`` needs is checked first; one taken (another ``up``
  still running, say) stops it before it starts anything, naming the port.

With ``--room-spares N`` (and a PostgreSQL ``--store``), N more room instances are
configured everywhere but not started: SIGUSR1 starts the first spare that is not running,
and SIGUSR2 stops (SIGTERM: it hands its rooms over) the last one added. That is how
the room service grows and shrinks live on one machine; a spare that crashes is restarted
as any part.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from switchboard.gateway.config import GatewayConfig
from switchboard.services.auth.config import Config as AuthConfig
from switchboard.services.recovery.config import Config as RecoveryConfig
from switchboard.shared import ports
from switchboard.shared.config import setting, setting_of
from switchboard.shared.errors import ConfigError
from switchboard.shared.process import SUPERVISOR_ENV
from switchboard.shared.store import StoreConfig

log = logging.getLogger("switchboard.up")

PREFIX_COLOURS = ("36", "33", "35", "32", "34", "31", "96", "93", "95", "92")


MAX_ROOM_SHARDS = 64
#: Brokers ``up`` runs at most: each takes two ports of the ten below the services'.
MAX_BROKERS = 5


@dataclass(frozen=True)
class UpConfig:
    host: str = setting("127.0.0.1", "Address the gateways listen on.")
    port: int = setting(ports.GATEWAY_HTTP,
                        "Port of the first gateway; others use the next ports.")
    gateways: int = setting(1, "Number of gateways.")
    room_shards: int = setting(
        1, "Room-service instances that rooms (by room id) and presence (by user id) are "
        "partitioned over, each with its own SQLite file or all sharing one --store (1-64)."
    )
    room_spares: int = setting(
        0, "Room-service instances configured beyond --room-shards but not started: kill "
        "-USR1 <up's pid> starts one, which takes its share of rooms and users live; kill "
        "-USR2 stops the last one added, which hands them back. Needs a PostgreSQL --store."
    )
    brokers: int = setting(
        1, f"Brokers publications are spread over by topic (1-{MAX_BROKERS})."
    )
    conformance: bool = setting(
        False, "Run the configuration the official Socket.IO protocol test suite expects."
    )
    internal_port: int = setting(
        ports.BROKER_PUBLISH,
        "First loopback port for the broker and services (uses the next 20, and one more "
        "per room instance past the first, spares included)."
    )
    data_dir: str = setting("var", "Directory for SQLite files (with --store sqlite).")
    store: str = setting_of(StoreConfig, "store")
    jwt_secret: str = setting_of(AuthConfig, "jwt_secret")
    ping_interval: float = setting_of(GatewayConfig, "ping_interval")
    ping_timeout: float = setting_of(GatewayConfig, "ping_timeout")
    max_payload: int = setting_of(GatewayConfig, "max_payload")
    gateway_timeout: float = setting(
        5.0, "Seconds without a heartbeat before services drop a gateway's sockets (a gateway "
        "restarted under its id is recognised at once by its new instance id)."
    )
    allow_eio3: bool = setting_of(GatewayConfig, "allow_eio3")
    admin_ui_password_hash: str = setting_of(GatewayConfig, "admin_ui_password_hash")
    #: ``up`` runs the recovery service when this names any namespace.
    recovery_namespaces: tuple[str, ...] = setting_of(GatewayConfig, "recovery_namespaces")
    recovery_window: float = setting_of(RecoveryConfig, "recovery_window")
    grace: float = setting(10.0, "Seconds children get to stop before they are killed.")
    demo: bool = setting(
        True, "Demo mode: the gateways issue guest tokens at POST /api/token, so the web pages "
        "sign in with just a name (turn off anywhere real)."
    )

    def __post_init__(self) -> None:
        if not 1 <= self.room_shards <= MAX_ROOM_SHARDS:
            raise ConfigError(f"--room-shards {self.room_shards}: must be 1-{MAX_ROOM_SHARDS}")
        if not 1 <= self.brokers <= MAX_BROKERS:
            raise ConfigError(f"--brokers {self.brokers}: must be 1-{MAX_BROKERS}")
        if not 0 <= self.room_spares <= MAX_ROOM_SHARDS - self.room_shards:
            raise ConfigError(f"--room-spares {self.room_spares}: must be 0-"
                              f"{MAX_ROOM_SHARDS - self.room_shards} (--room-shards and "
                              f"spares make at most {MAX_ROOM_SHARDS} instances)")
        if self.room_spares and not StoreConfig(self.store).postgresql:
            raise ConfigError("--room-spares needs a PostgreSQL --store: with SQLite each "
                              "instance keeps its rooms in its own file, so none can move")

    def room_instances(self) -> tuple[str, ...]:
        """The room service's instance names, spares last: ``room`` alone, or ``room-0``...
        ``room-N-1``."""
        total = self.room_shards + self.room_spares
        if total == 1:
            return ("room",)
        return tuple(f"room-{i}" for i in range(total))

    def room_spare_names(self) -> tuple[str, ...]:
        """The room instances configured but not started at first (--room-spares)."""
        return self.room_instances()[self.room_shards:]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    #: TCP (host, port) pairs the child binds: checked before anything starts.
    binds: tuple[tuple[str, int], ...] = ()
    #: Stopped before the others (a gateway: its sockets' departures reach the services).
    front: bool = False
    #: Started with the others; a spare (False) waits for SIGUSR1.
    autostart: bool = True
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    #: When a child that exited is due to start again (None: running, or not yet started).
    restart_at: float | None = None


#: A part's exit code for a configuration value that names nothing real (click's usage
#: errors use it too).
CONFIG_EXIT = 2


class PortTaken(Exception):
    """A port ``up`` needs is in use: nothing was started."""

    def __init__(self, child: str, host: str, port: int) -> None:
        super().__init__(f"port {port} on {host} (for {child}) is already in use; is another "
                         "'switchboard up' running? (choose others with --port / --internal-port)")
        self.port = port


def check_ports(children: list[Child]) -> None:
    """Raise :class:`PortTaken` for the first port a child needs that something holds.

    Bound the way the parts bind (``SO_REUSEADDR``, as asyncio and ZeroMQ do), so a port
    in TIME_WAIT after a previous run counts as free and a listening one as taken.
    """
    for child in children:
        for host, port in child.binds:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        raise PortTaken(child.name, host, port) from None
                    raise


def plan(config: UpConfig) -> list[Child]:
    """The children of ``up``, in start order."""
    base = config.internal_port
    cmd = [sys.executable, "-m", "switchboard"]
    loopback = "127.0.0.1"
    children = []
    # Broker k on the ports base + 2k and base + 2k + 1; every part lists them in order.
    publishers, subscribers = [], []
    for k in range(config.brokers):
        publish, subscribe = (f"tcp://127.0.0.1:{base + 2 * k}",
                              f"tcp://127.0.0.1:{base + 2 * k + 1}")
        publishers.append(publish)
        subscribers.append(subscribe)
        name = "broker" if config.brokers == 1 else f"broker-{k}"
        children.append(Child(name,
                              [*cmd, "broker", "--name", name, "--publish-bind", publish,
                               "--subscribe-bind", subscribe],
                              binds=((loopback, base + 2 * k), (loopback, base + 2 * k + 1))))
    publish, subscribe = ",".join(publishers), ",".join(subscribers)
    rooms = config.room_instances()
    spares = config.room_spare_names()
    names = ["conformance"] if config.conformance else ["auth", "moderation", *rooms, "game"]
    recovering = [f"--recovery-namespaces={ns}" for ns in config.recovery_namespaces]
    if recovering and not config.conformance:
        names.append("recovery")
    ping_interval, ping_timeout, max_payload = (
        (0.3, 0.2, 1_000_000) if config.conformance  # what the official suite asserts
        else (config.ping_interval, config.ping_timeout, config.max_payload)
    )
    endpoints = [f"{name}=tcp://127.0.0.1:{base + offset}"
                 for offset, name in enumerate(names, start=10)]
    # Every service knows the others' too: a filter passes events on to their owner.
    service_args = [arg for endpoint in endpoints for arg in ("--services", endpoint)]
    for offset, name in enumerate(names, start=10):
        endpoint = f"tcp://127.0.0.1:{base + offset}"
        kind = "room" if name in rooms else name  # every room instance runs the room service
        argv = [*cmd, "service", kind, "--bind", endpoint, "--broker-pub", publish,
                "--gateway-timeout", str(config.gateway_timeout), *service_args]
        if kind == "room":
            argv += ["--room-db", os.path.join(config.data_dir, f"{name}.sqlite3"),
                     "--room-instance", name, "--room-instances", ",".join(rooms)]
        if name == "moderation":
            argv += [f"--{name}-db", os.path.join(config.data_dir, f"{name}.sqlite3")]
        if name == "recovery":
            argv += [*recovering, "--recovery-window", str(config.recovery_window),
                     "--broker-sub", subscribe]
        env = {"SWITCHBOARD_JWT_SECRET": config.jwt_secret}
        if kind in ("room", "moderation"):
            env["SWITCHBOARD_STORE"] = config.store  # not in argv: a URL may hold a password
        children.append(Child(name, argv, env, binds=((loopback, base + offset),),
                              autostart=name not in spares))
    for i in range(config.gateways):
        port = config.port + i
        argv = [*cmd, "gateway", "--host", config.host, "--port", str(port),
                "--gateway-id", f"gw{port}-{secrets.token_hex(2)}",
                "--broker-sub", subscribe, "--broker-pub", publish,
                "--ping-interval", str(ping_interval),
                "--ping-timeout", str(ping_timeout),
                "--max-payload", str(max_payload),
                # Half of ours: a gateway's stop is bounded by it, so none needs killing.
                "--shutdown-grace", str(config.grace / 2)]
        argv += service_args
        if config.conformance:
            argv += ["--connect-timeout", "2", "--connect-emit-delay", "0.02", "--engine-echo"]
        argv.append("--demo" if config.demo else "--no-demo")
        if config.allow_eio3:
            argv.append("--allow-eio3")
        argv += recovering
        env = {"SWITCHBOARD_JWT_SECRET": config.jwt_secret}
        if config.admin_ui_password_hash:  # in the environment: argv is world-readable
            env["SWITCHBOARD_ADMIN_UI_PASSWORD_HASH"] = config.admin_ui_password_hash
        children.append(Child(f"gateway:{port}", argv, env,
                              binds=((config.host, port),), front=True))
    return children


class Supervisor:
    def __init__(self, children: list[Child], log_level: str, log_json: bool,
                 grace: float) -> None:
        self.children = children
        self.log_level = log_level
        self.log_json = log_json
        self.grace = grace
        #: The signal that asked us to stop (set by the handler; nothing else happens there).
        self.signalled: int | None = None
        #: SIGUSR1 / SIGUSR2 received and not yet acted on: add or remove a spare.
        self.scaling: list[int] = []
        #: Spares started by SIGUSR1 and running, in the order they were added.
        self.added: list[Child] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.width = max(len(c.name) for c in children)

    @property
    def stopping(self) -> bool:
        return self.signalled is not None

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signalled = signum  # only this: see the module docstring

    def _on_scale(self, signum: int, _frame: object) -> None:
        self.scaling.append(signum)  # acted on by the supervising loop

    def _scale(self) -> None:
        """Start the first spare not running (SIGUSR1), or stop the last added (SIGUSR2)."""
        while self.scaling and not self.stopping:
            signum = self.scaling.pop(0)
            spares = [c for c in self.children if not c.autostart]
            if signum == signal.SIGUSR1:
                idle = [c for c in spares if c.process is None]
                if not idle:
                    log.warning("SIGUSR1: no spare room instance left to start (--room-spares "
                                "%d, all running)", len(spares))
                    continue
                spare = idle[0]
                self.start(spare)
                self.added.append(spare)
                assert spare.process is not None
                log.info("%s added (pid %d)", spare.name, spare.process.pid)
            elif self.added:
                last = self.added.pop()  # not by start time: a crashed one restarts later
                self._terminate([last], time.monotonic() + self.grace)
                code = last.process.returncode if last.process is not None else None
                last.process, last.restart_at, last.restarts = None, None, 0
                log.info("%s removed (exit %s)", last.name, code)
            else:
                log.warning("SIGUSR2: no spare room instance is running")

    def request_stop(self) -> None:
        """Stop as a signal would (for callers in other threads: the tests)."""
        self.signalled = signal.SIGTERM
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(self._wake_w, b"\0")

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` or until asked to stop; True when asked to stop."""
        deadline = time.monotonic() + seconds
        while not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            select.select([self._wake_r], [], [], remaining)
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 512):
                    pass
        return True

    def start(self, child: Child) -> None:
        env = {**os.environ, **child.env, "SWITCHBOARD_LOG_LEVEL": self.log_level,
               "SWITCHBOARD_LOG_JSON": "1" if self.log_json else "0",
               "PYTHONUNBUFFERED": "1", SUPERVISOR_ENV: str(os.getpid())}
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
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(self._wake_w)
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._on_signal)
            for sig in (signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(sig, self._on_scale)
        for child in self.children:
            if self.stopping:
                break
            if child.autostart:
                self.start(child)
        while not self.sleep(0.2):
            self._scale()
            now = time.monotonic()
            for child in self.children:
                if child.process is None:
                    continue  # a spare not started
                if child.restart_at is not None:
                    # Each child waits out its own backoff; the others are watched meanwhile.
                    if now >= child.restart_at:
                        child.restart_at = None
                        self.start(child)
                        log.info("%s restarted (pid %d)", child.name, child.process.pid)
                    continue
                code = child.process.poll()
                if code is None:
                    continue
                if code == CONFIG_EXIT and child.restarts == 0 and not self.stopping:
                    # Its configuration names something that does not exist (its own output
                    # says what): a restart would only fail the same way.
                    log.error("%s refused its configuration (exit %d); stopping", child.name,
                              code)
                    self.stop()
                    return CONFIG_EXIT
                # Restart with backoff; a child that keeps crashing at once waits longer.
                uptime = now - child.started
                child.restarts = child.restarts + 1 if uptime < 10 else 1
                delay = min(0.5 * 2 ** (child.restarts - 1), 10.0)
                log.error("%s exited with code %s after %.1fs; restarting in %.1fs",
                          child.name, code, uptime, delay)
                child.restart_at = now + delay
        self.stop()
        return 0

    def stop(self) -> None:
        name = signal.Signals(self.signalled).name if self.signalled else "request"
        log.info("stopping %d parts (%s)", len(self.children), name)
        # Gateways first: their sockets' departures (DISCONNECT) reach services still
        # running, so presence is right when everything is down. Then services and broker.
        # One deadline for both: ``grace`` bounds the whole stop.
        deadline = time.monotonic() + self.grace
        self._terminate([c for c in self.children if c.front], deadline)
        self._terminate([c for c in reversed(self.children) if not c.front], deadline)
        log.info("all parts stopped")

    @staticmethod
    def _terminate(children: list[Child], deadline: float) -> None:
        for child in children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                child.process.kill()
                child.process.wait(5)


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
    """Run everything until a signal; 2 when a port is taken (nothing is started then)."""
    children = plan(config)
    try:
        check_ports(children)
    except PortTaken as exc:
        log.error("%s", exc)
        return CONFIG_EXIT
    os.makedirs(config.data_dir, exist_ok=True)
    supervisor = Supervisor(children, log_level, log_json, config.grace)

    def announce() -> None:
        for i in range(config.gateways):
            url = f"http://{config.host}:{config.port + i}"
            if wait_http(url + "/health", 30):
                log.info("ready: %s (socket.io path /socket.io/)", url)

    threading.Thread(target=announce, daemon=True).start()
    return supervisor.run()
