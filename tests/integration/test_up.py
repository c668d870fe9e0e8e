"""``switchboard up`` as a user runs it: one command, supervised children, clean stop.

Each test starts ``up`` as a subprocess on free ports (its output to a file), finds its
children through /proc, and ends with SIGTERM: ``up`` must exit 0 on its own, before its
10 s kill grace would have to SIGKILL anyone, with none of its children (nor anything in their
process groups) left.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.support.cluster import http_get
from tests.support.upserver import HOST, free_port_block, process_table, spawn_up

WAIT = 8.0
READY_BOUND = 30.0
#: From a kill -9 to serving again: the supervisor polls every 0.2 s, restarts after a 0.5 s
#: backoff, and the part needs a second or two to start (a gateway waits for the services).
RECOVERY_BOUND = 30.0
#: Below ``up``'s 10 s grace, so a child that only stops when SIGKILLed fails the test.
STOP_BOUND = 8.0
#: An ack in a probe. python-socketio's ``call`` waits this long even when the connection
#: dropped meanwhile (which, with the conformance heartbeat of 300 + 200 ms, a very loaded
#: machine can cause); probes are retried until their deadline, so keep each one short.
PROBE_CALL = 3.0
JWT_SECRET = "test-secret-of-at-least-thirty-two-bytes!"
APP_SERVICES = ("auth", "moderation", "room", "game")


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
        return "broker"
    if args[:1] == ["service"]:
        return args[1]
    if args[:1] == ["gateway"]:
        return f"gateway:{args[args.index('--port') + 1]}"
    return None


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    ports: list[int]
    log: Path

    def url(self, index: int = 0) -> str:
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


def start_up(workdir: Path, *args: str, gateways: int = 1) -> Up:
    base = free_port_block(gateways)
    process, log = spawn_up(
        workdir, "--port", str(base), "--gateways", str(gateways),
        "--internal-port", str(free_port_block(21)), "--data-dir", str(workdir / "data"),
        "--jwt-secret", JWT_SECRET, *args)
    up = Up(process, [base + i for i in range(gateways)], log)
    deadline = time.monotonic() + READY_BOUND
    for index in range(gateways):
        while True:
            if process.poll() is not None:
                pytest.fail(f"up exited with {process.returncode}:\n{up.output()}")
            with contextlib.suppress(OSError):
                if http_get(up.url(index) + "/health", timeout=1)[0] == 200:
                    break
            if time.monotonic() > deadline:
                cleanup(up, up.descendants())
                pytest.fail(f"up not healthy within {READY_BOUND}s:\n{up.output()}")
            time.sleep(0.1)
    return up


@contextlib.contextmanager
def running_up(workdir: Path, *args: str, gateways: int = 1) -> Any:
    """``up`` for the block; stopped (and checked) at its end, killed if the block failed."""
    up = start_up(workdir, *args, gateways=gateways)
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


# ------------------------------------------------------------------ Socket.IO probes


async def conformance_round_trip(url: str) -> None:
    """Connect to / (the conformance service echoes the CONNECT payload as ``auth``) and get
    an ack."""
    client = socketio.AsyncClient(reconnection=False)
    auth: asyncio.Queue[Any] = asyncio.Queue()
    client.on("auth", auth.put_nowait)
    try:
        await asyncio.wait_for(
            client.connect(url, auth={"probe": 1}), WAIT)
        assert await asyncio.wait_for(auth.get(), WAIT) == {"probe": 1}
        ack = await client.call("message-with-ack", {"n": [1, "2"]}, timeout=PROBE_CALL)
        assert ack == {"n": [1, "2"]}
    finally:
        await asyncio.wait_for(client.disconnect(), WAIT)


async def app_round_trip(url: str) -> None:
    """The full application: a signed-in socket on / (welcome, rooms) and one on /game."""
    from switchboard.shared.tokens import issue_token

    token = issue_token(JWT_SECRET, "u-up-test", "uptest")
    client = socketio.AsyncClient(reconnection=False)
    welcome: asyncio.Queue[Any] = asyncio.Queue()
    client.on("welcome", welcome.put_nowait)
    try:
        await asyncio.wait_for(
            client.connect(url, namespaces=["/", "/game"],
                           auth={"token": token}), WAIT)
        greeting = await asyncio.wait_for(welcome.get(), WAIT)
        assert greeting["socketId"] == client.get_sid("/")
        rooms = await client.call("get rooms", timeout=PROBE_CALL)
        assert rooms["success"] is True and isinstance(rooms["rooms"], list)
        assert client.get_sid("/game")
    finally:
        await asyncio.wait_for(client.disconnect(), WAIT)


async def serves(probe: Callable[[str], Awaitable[None]], url: str) -> None:
    """Poll ``probe`` until it succeeds, within :data:`RECOVERY_BOUND`.

    A first attempt normally succeeds; retrying only absorbs a probe lost to the 200 ms
    conformance ping timeout on a very loaded machine. A part that does not serve still
    fails, with the last probe's error."""
    deadline = time.monotonic() + RECOVERY_BOUND
    while True:
        try:
            await asyncio.wait_for(probe(url), WAIT + 2)
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"not serving within {RECOVERY_BOUND}s") from exc
        await asyncio.sleep(0.1)


async def kill_and_recover(up: Up, victim: str,
                           probe: Callable[[str], Awaitable[None]]) -> None:
    """kill -9 one child: the supervisor reports it, restarts it, and the system serves."""
    before = up.children()
    pid, _ = before[victim]
    os.kill(pid, signal.SIGKILL)
    await up.wait_output(rf"{re.escape(victim)} exited with code -9 after")
    match = await up.wait_output(rf"{re.escape(victim)} restarted \(pid (\d+)\)")
    new_pid = int(match.group(1))
    assert new_pid != pid
    after = up.children()
    assert after[victim][0] == new_pid
    assert {name: info for name, info in after.items() if name != victim} == {
        name: info for name, info in before.items() if name != victim}, "others were restarted"
    await serves(probe, up.url())


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("victim", ["gateway", "conformance", "broker"])
async def test_up_conformance_restarts_a_killed_part(tmp_path: Path, victim: str) -> None:
    with running_up(tmp_path, "--conformance") as up:
        names = ["broker", "conformance", f"gateway:{up.ports[0]}"]
        assert sorted(up.children()) == sorted(names)
        assert_prefixed(up, names)
        await serves(conformance_round_trip, up.url())
        target = f"gateway:{up.ports[0]}" if victim == "gateway" else victim
        await kill_and_recover(up, target, conformance_round_trip)
        # The restarted part writes through the same prefix: a second "ready" line from it.
        await up.wait_ready_lines(target.ljust(max(map(len, names))), 2)
        assert_prefixed(up, names)


async def test_up_two_gateways_on_consecutive_ports(tmp_path: Path) -> None:
    with running_up(tmp_path, "--conformance", gateways=2) as up:
        first, second = up.ports
        assert second == first + 1
        names = ["broker", "conformance", f"gateway:{first}", f"gateway:{second}"]
        assert sorted(up.children()) == sorted(names)
        assert_prefixed(up, names)
        ids = set()
        for index in range(2):
            status, _, body = http_get(up.url(index) + "/health")
            assert status == 200, body
            ids.add(json.loads(body)["gateway"])
            await serves(conformance_round_trip, up.url(index))
        assert len(ids) == 2, f"gateway ids: {ids}"


def app_services_missing() -> str | None:
    for name in APP_SERVICES:
        try:
            module = importlib.import_module(f"switchboard.services.{name}")
        except Exception as exc:  # a half-written service is as absent as a missing one
            return f"switchboard.services.{name} does not import: {exc!r}"
        if not hasattr(module, "Config") or not hasattr(module, "create"):
            return f"switchboard.services.{name} has no Config/create yet"
    return None


async def test_plain_up_runs_the_application(tmp_path: Path) -> None:
    missing = app_services_missing()
    if missing:
        pytest.skip(f"plain `up` needs auth, moderation, room and game: {missing}")
    with running_up(tmp_path) as up:
        names = ["broker", *APP_SERVICES, f"gateway:{up.ports[0]}"]
        assert sorted(up.children()) == sorted(names)
        assert_prefixed(up, names)
        await serves(app_round_trip, up.url())
        await kill_and_recover(up, "room", app_round_trip)


async def test_killed_gateway_users_leave_presence_when_it_restarts(tmp_path: Path) -> None:
    """kill -9 a gateway under ``up``: the supervisor restarts it under the same gateway id,
    and the services, seeing a new instance of it, drop its dead sockets at once — far
    sooner than the 60 s heartbeat timeout configured here, which cannot be what acts."""
    missing = app_services_missing()
    if missing:
        pytest.skip(missing)
    from switchboard.shared.tokens import issue_token

    with running_up(tmp_path, "--gateway-timeout", "60", gateways=2) as up:
        victim = f"gateway:{up.ports[0]}"
        ghost = socketio.AsyncClient(reconnection=False)
        watcher = socketio.AsyncClient(reconnection=False)
        offline: asyncio.Queue[Any] = asyncio.Queue()
        watcher.on("user offline", offline.put_nowait)
        try:
            await asyncio.wait_for(ghost.connect(
                up.url(0),
                auth={"token": issue_token(JWT_SECRET, "u-ghost", "ghost")}), WAIT)
            await asyncio.wait_for(watcher.connect(
                up.url(1),
                auth={"token": issue_token(JWT_SECRET, "u-watch", "watcher")}), WAIT)
            online = await watcher.call("get online users", timeout=PROBE_CALL)
            assert sorted(u["id"] for u in online["users"]) == ["u-ghost", "u-watch"]
            pid, _ = up.children()[victim]
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            await up.wait_output(rf"{re.escape(victim)} restarted \(pid \d+\)")
            gone = await asyncio.wait_for(offline.get(), 20)
            assert gone == {"userId": "u-ghost", "username": "ghost"}
            assert time.monotonic() - killed < 20
            online = await watcher.call("get online users", timeout=PROBE_CALL)
            assert [u["id"] for u in online["users"]] == ["u-watch"]
            assert re.search(r"gateway \S+ restarted \(instance", up.output())
        finally:
            for client in (ghost, watcher):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), WAIT)


# ------------------------------------------------------------------ stops and crashes of up


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


async def test_killed_up_takes_its_children_with_it(tmp_path: Path) -> None:
    """kill -9 of ``up`` itself (an OOM kill, a crashed terminal) runs none of its code; its
    children still go (the kernel kills each when its parent dies), within 2 s, so the next
    ``up`` finds its ports free."""
    up = start_up(tmp_path, "--conformance", gateways=2)
    pids = up.descendants()
    try:
        assert len(up.children()) == 4, up.children()
        killed = time.monotonic()
        up.process.kill()
        up.process.wait(5)
        while alive(pids) and time.monotonic() - killed < 2.0:
            await asyncio.sleep(0.02)
        assert alive(pids) == [], f"left running 2 s after up was killed: {alive(pids)}"
    finally:
        cleanup(up, pids)
    # Its ports are free again: the same command starts cleanly.
    again, log = spawn_up(tmp_path, *up.process.args[4:])  # type: ignore[index]
    second = Up(again, up.ports, log)
    try:
        await serves(conformance_round_trip, second.url())
        second.stop()
    finally:
        cleanup(second, second.descendants())


async def test_up_refuses_to_start_when_a_port_is_taken(tmp_path: Path) -> None:
    """A second ``up`` on the ports of a running one starts nothing and exits non-zero, naming
    the port: a gateway port, and (on other gateway ports) an internal one."""
    with running_up(tmp_path, "--conformance") as first:
        internal = int(first.process.args[first.process.args.index("--internal-port") + 1])  # type: ignore[union-attr,index]
        cases = [
            (["--port", str(first.ports[0]), "--internal-port", str(free_port_block(21))],
             first.ports[0]),
            (["--port", str(free_port_block(1)), "--internal-port", str(internal)], internal),
        ]
        for index, (ports_args, taken) in enumerate(cases):
            workdir = tmp_path / f"second-{index}"
            workdir.mkdir()
            process, log = spawn_up(workdir, "--conformance", "--data-dir",
                                    str(workdir / "data"), *ports_args)
            try:
                code = process.wait(WAIT)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(5)
            output = log.read_text()
            assert code == 2, output
            assert f"port {taken} " in output and "already in use" in output, output
            assert " | " not in output, f"a part was started:\n{output}"  # no child's output
        # The first is untouched by the attempts.
        await serves(conformance_round_trip, first.url())


STOP_MOMENTS = 12


async def test_sigterm_at_any_moment_stops_up(tmp_path: Path) -> None:
    """SIGTERM at random moments (while it starts its children, idle, while it restarts a
    killed one), sometimes twice in a row as stopping ``make up``'s process group does:
    every time ``up`` stops within its grace and leaves nothing behind."""
    rng = random.Random(15)
    moments = ["starting", "idle", "restarting", "twice"] * (STOP_MOMENTS // 4)
    outcomes = []
    for round_, moment in enumerate(moments):
        workdir = tmp_path / f"round-{round_}"
        workdir.mkdir()
        base = free_port_block(1)
        process, log = spawn_up(workdir, "--conformance", "--port", str(base),
                                "--internal-port", str(free_port_block(21)),
                                "--data-dir", str(workdir / "data"))
        up = Up(process, [base], log)
        seen: set[int] = set()
        try:
            if moment == "starting":
                deadline = time.monotonic() + rng.uniform(0.0, 1.5)
                while time.monotonic() < deadline:
                    seen.update(up.descendants())
                    await asyncio.sleep(0.01)
            else:
                await serves(conformance_round_trip, up.url())
                seen.update(up.descendants())
                if moment == "restarting":
                    victim = rng.choice(sorted(up.children()))
                    os.kill(up.children()[victim][0], signal.SIGKILL)
                    await up.wait_output(rf"{re.escape(victim)} exited with code -9")
                    await asyncio.sleep(rng.uniform(0.0, 0.6))  # within the restart backoff
                    seen.update(up.descendants())
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            if moment == "twice":
                process.send_signal(signal.SIGTERM)
            try:
                code: int | None = process.wait(STOP_BOUND)
            except subprocess.TimeoutExpired:
                code = None
            elapsed = time.monotonic() - started
            seen.update(up.descendants())
            deadline = time.monotonic() + 2.0
            while alive(sorted(seen)) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            left = alive(sorted(seen))
            outcomes.append((moment, code, round(elapsed, 2), left))
            # Killed by the signal itself is a stop too, but only before up installed its
            # handler, when it had started nothing.
            assert code == 0 or (code == -signal.SIGTERM and not seen), (moment, code,
                                                                        up.output()[-3000:])
            assert left == [], (moment, left)
        finally:
            cleanup(up, sorted(seen | set(up.descendants())))
    assert len(outcomes) == STOP_MOMENTS
    assert sum(1 for _, code, _, _ in outcomes if code == 0) >= STOP_MOMENTS // 2, outcomes
