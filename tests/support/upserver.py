"""``switchboard up`` as a subprocess of a test: free ports for it, starting it with its
output to a file, finding its children through the process table, and stopping it with the
checks every test wants (exit 0 on SIGTERM, within the bound, nothing left behind)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from switchboard.supervisor import UpConfig
from tests.support.cluster import http_get
from tests.support.ports import free_port_block

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
READY_BOUND = 30.0
#: From a kill -9 to serving again: the supervisor polls every 0.2 s, restarts after a 0.5 s
#: backoff, and the part needs a second or two to start (a gateway waits for the services).
RECOVERY_BOUND = 30.0
#: ``up``'s default grace: the most its stop may take (its gateways get half of it).
UP_GRACE = UpConfig().grace
#: SIGTERM to exit: the grace and a little more for ``up`` to kill what outlived it, so that a
#: child that only stopped when SIGKILLed fails on the supervisor's own words ("did not stop
#: in time"), not on a bound shorter than the grace.
STOP_BOUND = UP_GRACE + 3.0


def process_table() -> dict[int, tuple[int, int, int]]:
    """pid → (ppid, pgid, start time) for every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # The command name (field 2) may hold spaces and parentheses: split after the last ")".
        fields = stat.rpartition(")")[2].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[19]))
    return table


def spawn_up(workdir: Path, *args: str, python: str = sys.executable, cwd: Path = ROOT,
             env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Path]:
    """``switchboard up ARGS`` (run by ``python``, in ``cwd``, with ``env`` added to ours) in
    a session of its own, unbuffered, its output (stdout and stderr) to ``workdir/up.log``;
    the process and that log."""
    log = workdir / "up.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [python, "-m", "switchboard", "up", *args],
            stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    return process, log


def part_name(pid: int) -> str | None:
    """The supervisor's name for a child, from its command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return None
    if "switchboard" not in argv:
        return None
    args = argv[argv.index("switchboard") + 1:]
    if args[:1] == ["broker"]:
        return args[args.index("--name") + 1] if "--name" in args else "broker"
    if args[:1] == ["service"]:
        # An instance of a partitioned service goes by its own name (room-1).
        if "--room-instance" in args:
            return args[args.index("--room-instance") + 1]
        return args[1]
    if args[:1] == ["gateway"]:
        return f"gateway:{args[args.index('--port') + 1]}"
    return None


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    ports: list[int]
    log: Path

    @property
    def url(self) -> str:
        """The first gateway's."""
        return self.url_of(0)

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def ws_url(self) -> str:
        """The first gateway's Engine.IO WebSocket endpoint."""
        return f"ws://{HOST}:{self.port}/socket.io/?EIO=4&transport=websocket"

    def url_of(self, index: int) -> str:
        return f"http://{HOST}:{self.ports[index]}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> dict[str, tuple[int, int]]:
        """Part name → (pid, start time) of the running children."""
        found = {}
        for pid, (ppid, _, start) in process_table().items():
            if ppid == self.process.pid:
                name = part_name(pid)
                if name is not None:
                    found[name] = (pid, start)
        return found

    def descendants(self) -> list[int]:
        """Children and anything in their process groups (each child leads its own)."""
        children = {pid for pid, (ppid, _, _) in process_table().items()
                    if ppid == self.process.pid}
        return [pid for pid, (_, pgid, _) in process_table().items()
                if pid in children or pgid in children]

    async def wait_output(self, pattern: str, bound: float = RECOVERY_BOUND) -> re.Match[str]:
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + bound
        while True:
            match = regex.search(self.output())
            if match:
                return match
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"no output matching {pattern!r}:\n{self.output()[-4000:]}")
            await asyncio.sleep(0.05)

    async def wait_ready_lines(self, label: str, count: int) -> None:
        regex = re.compile(rf"^{re.escape(label)} \| .*\bready\b", re.MULTILINE)
        deadline = time.monotonic() + RECOVERY_BOUND
        while len(regex.findall(self.output())) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"fewer than {count} ready lines from {label.strip()}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM; assert a clean exit and that nothing it started survives."""
        children = {pid: start for pid, start in self.children().values()}
        assert children, "no children to stop"
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(STOP_BOUND)
        except subprocess.TimeoutExpired:
            code = None
        elapsed = time.monotonic() - started
        left = [pid for pid, (_, pgid, start) in process_table().items()
                if children.get(pid) == start or pgid in children]
        cleanup(self, left)
        output = self.output()
        assert code == 0, f"up exited with {code} after SIGTERM:\n{output[-4000:]}"
        assert elapsed < STOP_BOUND
        assert not left, f"left running after up exited: {left}"
        assert "did not stop in time" not in output, output[-4000:]
        assert "all parts stopped" in output


def cleanup(up: Up, pids: list[int]) -> None:
    """Make sure nothing started by ``up`` survives the test (after a failure too): ``up``
    itself first, so that it cannot restart what is killed next."""
    if up.process.poll() is None:
        up.process.kill()
        up.process.wait(5)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_up(workdir: Path, *args: str, gateways: int = 1, python: str = sys.executable,
             cwd: Path = ROOT, env: dict[str, str] | None = None) -> Up:
    """``up ARGS`` on free ports, once every gateway answers /health."""
    base = free_port_block(gateways)
    process, log = spawn_up(
        workdir, "--port", str(base), "--gateways", str(gateways),
        "--internal-port", str(free_port_block(21)), "--data-dir", str(workdir / "data"),
        *args, python=python, cwd=cwd, env=env)
    up = Up(process, [base + i for i in range(gateways)], log)
    deadline = time.monotonic() + READY_BOUND
    for index in range(gateways):
        while True:
            if process.poll() is not None:
                pytest.fail(f"up exited with {process.returncode}:\n{up.output()}")
            with contextlib.suppress(OSError):
                if http_get(up.url_of(index) + "/health", timeout=1)[0] == 200:
                    break
            if time.monotonic() > deadline:
                cleanup(up, up.descendants())
                pytest.fail(f"up not healthy within {READY_BOUND}s:\n{up.output()}")
            time.sleep(0.1)
    return up


@contextlib.contextmanager
def running_up(workdir: Path, *args: str, gateways: int = 1, python: str = sys.executable,
               cwd: Path = ROOT, env: dict[str, str] | None = None) -> Iterator[Up]:
    """``up`` for the block; stopped (and checked) at its end, killed if the block failed."""
    up = start_up(workdir, *args, gateways=gateways, python=python, cwd=cwd, env=env)
    try:
        yield up
        up.stop()
    except BaseException:
        cleanup(up, up.descendants())
        print(f"--- output of up (tail)\n{up.output()[-8000:]}")  # shown with the failure
        raise


def assert_prefixed(up: Up, names: list[str]) -> None:
    """Every line comes from a named part (``name | ``) or is ``up``'s own log."""
    width = max(len(name) for name in names)
    prefixes = tuple(f"{name.ljust(width)} | " for name in names)
    for line in up.output().split("\n"):  # not splitlines(): it also splits at \r, \x1c...
        if line and not line.startswith(prefixes):
            assert " up " in line and "switchboard.up" in line, f"unprefixed line: {line!r}"
    for prefix in prefixes:
        assert re.search(rf"^{re.escape(prefix)}.*\bready\b", up.output(), re.MULTILINE), (
            f"no ready line from {prefix!r}:\n{up.output()}")


def alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (a zombie has died: only its parent has not reaped it,
    and an orphan's new parent may be an init that never does)."""
    table = process_table()
    running = []
    for pid in pids:
        if pid not in table:
            continue
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            if state != "Z":
                running.append(pid)
    return running
