"""The servers under test, each started as a process tree on loopback and stopped after.

- ``ours`` / ``ours2``: ``switchboard up`` (broker, auth, moderation, room, game, 1 or 2
  gateways) with the moderation rate limits off and log level ``warning``.
- ``node``: ``bench/peers/node/server.mjs`` (socket.io 4.8, the seed's chat logic).
- ``pysio``: ``bench/peers/pysio/server.py`` (python-socketio 5, uvicorn + uvloop).

All of them get the same JWT secret and listen on 127.0.0.1 ports below the ephemeral range,
so the load generator's outgoing connections never take a port a server needs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench import procs
from bench.quotas import CpuQuotas
from tests.support.ports import free_port_block

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
JWT_SECRET = "bench-secret-0123456789-0123456789-abcdef"

#: What the benchmark turns off in ``switchboard up`` (the peers have these off too):
#: per-socket and per-user event limits and the per-IP connect limit of moderation, and the
#: gateways' per-IP handshake limit (one load generator address opens every connection).
OURS_ENV = {
    "SWITCHBOARD_EVENT_LIMIT": "0",
    "SWITCHBOARD_USER_EVENT_LIMIT": "0",
    "SWITCHBOARD_CONNECT_LIMIT": "0",
    "SWITCHBOARD_HANDSHAKE_RATE": "0",
}


class Quota:
    """The CPU each process of a server tree is held to (``--quota``; 0: none), and per part
    (``--quota-of room=0.1``: every process labelled ``room``, ``gateway`` for all gateways)."""

    cores = 0.0
    parts: dict[str, float] = {}
    period_us = 100_000

    def __bool__(self) -> bool:
        return bool(self.cores or self.parts)

    def of(self, label: str) -> float:
        return self.parts.get(label, self.parts.get(label.partition(":")[0], self.cores))


QUOTA = Quota()


def wait_health(url: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy within {timeout:.0f}s")


class Server:
    """One server under test; ``start()`` returns when every listener is healthy."""

    name = "server"
    title = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.quotas: CpuQuotas | None = None
        self.ports: list[int] = []
        self.log = workdir / f"{self.name}.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def gateways(self) -> int:
        return 1

    def cwd(self) -> Path:
        return ROOT

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        base = free_port_block(self.gateways())
        self.ports = [base + i for i in range(self.gateways())]
        env = {**os.environ, **self.env(), "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.cwd(), start_new_session=True,
                preexec_fn=procs.confine("server"))
        try:
            for port in self.ports:
                wait_health(f"http://127.0.0.1:{port}/health", 60, self.process)
            if QUOTA:
                # Each process its own stand-in host (after the start-up, which is not
                # what is measured, and once every process of the tree is there).
                self.quotas = CpuQuotas(period_us=QUOTA.period_us)
                held = self.quotas.hold_tree(self.process.pid, QUOTA.of)
                (self.workdir / f"{self.name}-quotas.txt").write_text(
                    "".join(f"{label} {group}\n" for label, group in sorted(held)))
        except Exception:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{port}" for port in self.ports]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        started = {pid: procs.start_time(pid) for pid in procs.tree(self.process.pid)}
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(15)
        # Whatever of the tree is left (children run in their own sessions): by pid, and
        # only the very processes seen in the tree (same start time: not a reused pid).
        for pid, start in started.items():
            if start is not None and procs.start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        try:
            if self.process.poll() is None:
                self.process.wait(5)
        finally:
            self.process = None
            if self.quotas is not None:
                self.quotas.close()
                self.quotas = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Ours(Server):
    name = "ours"
    title = "switchboard (1 gateway)"

    def __init__(self, workdir: Path, gateways: int = 1, root: Path | None = None,
                 rooms: int = 1, brokers: int = 1) -> None:
        self.n_gateways = gateways
        self.n_rooms = rooms
        self.n_brokers = brokers
        if gateways != 1:
            self.name = f"ours{gateways}"
            self.title = f"switchboard ({gateways} gateways)"
        if rooms != 1 or brokers != 1:
            self.name = (f"ours{gateways}" + (f"r{rooms}" if rooms != 1 else "")
                         + (f"b{brokers}" if brokers != 1 else ""))
            self.title = (f"switchboard ({gateways} gateways, {rooms} room instances, "
                          f"{brokers} broker{'s' if brokers != 1 else ''})")
        #: Another checkout of switchboard (``ours@DIR``): a before/after comparison of a
        #: change in one run. It runs installed from that checkout (``pip install --target``
        #: into the work directory, started there so that nothing comes from this one).
        self.root = root
        if root is not None:
            self.name = f"{self.name}@{root.name}"
            self.title = f"{self.title} at {root}"
        super().__init__(workdir)
        self.internal = 0

    def site(self) -> Path:
        return (self.workdir / f"{self.name}-site").resolve()

    def start(self) -> None:
        if self.root is not None and not (self.site() / "switchboard").is_dir():
            # From a clean copy: a build in the checkout itself would reuse what an earlier
            # build of another commit left in its build/ folder.
            source = self.workdir / f"{self.name}-source"
            shutil.rmtree(source, ignore_errors=True)
            shutil.copytree(self.root, source, symlinks=True, ignore=shutil.ignore_patterns(
                ".git", "build", "*.egg-info", "node_modules", ".venv", "test-output"))
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                            "--target", str(self.site()), str(source)],
                           check=True, timeout=600, stdout=subprocess.DEVNULL)
        super().start()

    def cwd(self) -> Path:
        return ROOT if self.root is None else self.site()

    def gateways(self) -> int:
        return self.n_gateways

    def argv(self) -> list[str]:
        self.internal = free_port_block(21 + self.n_rooms)
        data = (self.workdir / f"{self.name}-data").resolve()  # up may run elsewhere (ours@DIR)
        # fresh SQLite files for every start: no rooms or history from an earlier run
        for path in data.glob("*.sqlite3*") if data.exists() else ():
            path.unlink()
        return [sys.executable, "-m", "switchboard", "up",
                "--port", str(self.ports[0]), "--gateways", str(self.n_gateways),
                *(["--room-shards", str(self.n_rooms)] if self.n_rooms != 1 else []),
                *(["--brokers", str(self.n_brokers)] if self.n_brokers != 1 else []),
                "--internal-port", str(self.internal), "--data-dir", str(data),
                "--jwt-secret", JWT_SECRET, "--log-level", "warning"]

    def env(self) -> dict[str, str]:
        if self.root is None:
            return dict(OURS_ENV)
        return {**OURS_ENV, "PYTHONPATH": str(self.site())}


class Node(Server):
    name = "node"
    title = "Node socket.io 4.8"

    def argv(self) -> list[str]:
        return ["node", str(BENCH / "peers" / "node" / "server.mjs"), str(self.ports[0])]

    def env(self) -> dict[str, str]:
        return {"JWT_SECRET": JWT_SECRET}


class Pysio(Server):
    name = "pysio"
    title = "python-socketio 5 (uvicorn, uvloop)"

    def argv(self) -> list[str]:
        return [sys.executable, str(BENCH / "peers" / "pysio" / "server.py"),
                str(self.ports[0])]

    def env(self) -> dict[str, str]:
        return {"JWT_SECRET": JWT_SECRET}


SERVERS = ("node", "ours", "ours2", "pysio")


OURS = re.compile(r"^ours(\d*)(?:r(\d+))?(?:b(\d+))?(?:@(.+))?$")


def make(name: str, workdir: Path) -> Server:
    """A server by name: ``ours[G][rR][bK][@DIR]`` is switchboard with G gateways, R room
    instances and K brokers (1 each by default), from checkout DIR if given."""
    found = OURS.match(name)
    if found is not None:
        gateways, rooms, brokers, root = found.groups()
        return Ours(workdir, int(gateways or 1), Path(root).resolve() if root else None,
                    int(rooms or 1), int(brokers or 1))
    if name == "node":
        return Node(workdir)
    if name == "pysio":
        return Pysio(workdir)
    raise ValueError(f"unknown server {name!r} (use {', '.join(SERVERS)})")
