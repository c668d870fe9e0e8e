"""Jitter: clients whose connections are cut every ~15 s while their rooms carry traffic.

Socket.IO's connection state recovery exists for this. Each system runs in turn, driven by
the same load (``bench/loadgen/jitter.mjs``: official ``socket.io-client`` instances on their
default options, one sender per room, every receiver's engine closed about every
``--cut`` seconds at a random phase, a receiver that comes back as a new socket joins its
room again), and the table says how much of what was acked reached the members, whether in
order and once, and how late:

- ``ours``: ``switchboard up`` with ``--recovery-namespaces /`` and ``--gateways`` gateways
  behind HAProxy (round robin, no stickiness);
- ``ours-kills``: the same, and every ``--kill-every`` seconds a gateway is killed (kill -9;
  ``up`` restarts it): its clients come back through the balancer elsewhere;
- ``node-recovery``: Node socket.io 4.8 (the seed's chat logic, one process) with
  ``connectionStateRecovery``;
- ``node``: the same without (the default).

    python -m bench.jitter                       # 1,000 clients, 60 s each
    python -m bench.jitter --clients 200 --duration 20 --systems ours,node

Everything on loopback; each run bounded by its duration plus fixed waits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs
from bench.cli import Log, install, raise_nofile
from bench.servers import BENCH, JWT_SECRET, Node, Ours, Server
from tests.support.balancer import find_haproxy, run_haproxy
from tests.support.upserver import part_name

LOADGEN = BENCH / "loadgen" / "jitter.mjs"
SYSTEMS = ("ours", "ours-kills", "node-recovery", "node")


@dataclass
class Settings:
    clients: int
    rooms: int
    rate: float
    duration: float
    cut: float
    drain: float
    gateways: int
    kill_every: float
    transport: str = ""


class OursWithRecovery(Ours):
    def argv(self) -> list[str]:
        argv = super().argv()
        level = os.environ.get("JITTER_LOG_LEVEL")  # e.g. info, to follow recoveries
        if level and argv[-2] == "--log-level":
            argv[-1] = level
        return [*argv, "--recovery-namespaces", "/"]


class NodeWithRecovery(Node):
    name = "node-recovery"
    title = "Node socket.io 4.8, connectionStateRecovery"

    def env(self) -> dict[str, str]:
        return {**super().env(), "RECOVERY": "1"}


def http_url(server: Server, index: int = 0) -> str:
    return f"http://127.0.0.1:{server.ports[index]}"


@contextlib.contextmanager
def serving(system: str, settings: Settings, workdir: Path) -> Iterator[tuple[Server, str]]:
    """The system started; the URL its clients use (the balancer's for ours)."""
    server: Server
    if system.startswith("ours"):
        server = OursWithRecovery(workdir / system, settings.gateways)
    elif system == "node-recovery":
        server = NodeWithRecovery(workdir / system)
    else:
        server = Node(workdir / system)
    server.start()
    try:
        if system.startswith("ours"):
            binary = find_haproxy()
            if binary is None:
                raise SystemExit("haproxy is not installed (scripts/ensure-system-deps)")
            with run_haproxy(binary, workdir / system, server.ports) as url:
                yield server, url
        else:
            yield server, http_url(server)
    finally:
        server.stop()


def gateway_pids(server: Server) -> list[int]:
    return [pid for pid in procs.tree(server.pid)
            if (name := part_name(pid)) is not None and name.startswith("gateway:")]


def killer(server: Server, every: float, stop: threading.Event, kills: list[str]) -> None:
    """kill -9 a random gateway every ``every`` seconds until ``stop``."""
    rng = random.Random(7)
    while not stop.wait(every):
        pids = gateway_pids(server)
        if not pids:
            continue
        pid = rng.choice(pids)
        kills.append(part_name(pid) or str(pid))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run_one(system: str, settings: Settings, workdir: Path) -> dict[str, Any]:
    with serving(system, settings, workdir) as (server, url):
        config = {
            "url": url, "secret": JWT_SECRET, "clients": settings.clients,
            "rooms": settings.rooms, "rate": settings.rate,
            "durationMs": int(settings.duration * 1000), "cutMs": int(settings.cut * 1000),
            "drainMs": int(settings.drain * 1000),
            **({"transports": [settings.transport]} if settings.transport else {}),
        }
        env = {**os.environ, "JITTER": json.dumps(config)}
        bound = settings.duration + settings.drain + 300
        stop, kills = threading.Event(), list[str]()
        thread: threading.Thread | None = None
        with subprocess.Popen(["node", str(LOADGEN)], cwd=LOADGEN.parent, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as load:
            assert load.stdout is not None
            deadline = time.monotonic() + bound
            result: dict[str, Any] | None = None
            try:
                for line in load.stdout:
                    message = json.loads(line)
                    if message.get("event") == "sending" and system == "ours-kills":
                        thread = threading.Thread(
                            target=killer, args=(server, settings.kill_every, stop, kills),
                            daemon=True)
                        thread.start()
                    if "result" in message:
                        result = message["result"]
                    if "error" in message:
                        raise RuntimeError(f"{system}: {message['error']}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{system}: load generator past {bound:.0f}s")
            finally:
                stop.set()
                if thread is not None:
                    thread.join(5)
                if load.poll() is None:
                    load.kill()
            if result is None:
                errors = load.stderr.read() if load.stderr else ""
                raise RuntimeError(f"{system}: no result\n{errors}")
        result["kills"] = kills
        return result


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def table(results: dict[str, dict[str, Any]], settings: Settings) -> str:
    kills = (f", a gateway killed every {settings.kill_every:g} s in ours-kills"
             if "ours-kills" in results else "")
    lines = [
        f"**Jitter** (`python -m bench.jitter`, {time.strftime('%Y-%m-%d')}): "
        f"{settings.clients} clients in {settings.rooms} rooms, one sender per room at "
        f"{settings.rate:g} msg/s, each receiver's connection cut every ~{settings.cut:g} s "
        f"for {settings.duration:g} s; ours: {settings.gateways} gateways behind HAProxy"
        f"{kills}",
        "",
        "| system | acked | owed deliveries | delivered | ratio | duplicates | out of order "
        "| reconnects | recovered | live latency p50 / p99 ms | missed: delivered, "
        "latency p50 / p99 ms | kills |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for system, r in results.items():
        ratio = r["delivered"] / r["expected"] if r["expected"] else 0.0
        lines.append(
            f"| {system} | {r['acked']} | {r['expected']} | {r['delivered']} | "
            f"{ratio:.2%} | {r['duplicates']} | {r['outOfOrder']} | {r['reconnects']} | "
            f"{r['recovered']} | {ms(r['latency']['p50'])} / {ms(r['latency']['p99'])} | "
            f"{r['replay']['count']}, {ms(r['replay']['p50'])} / {ms(r['replay']['p99'])} | "
            f"{len(r['kills'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jitter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated, run in this order (default: {','.join(SYSTEMS)})")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--rate", type=float, default=2.0, help="messages/s per room")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    parser.add_argument("--cut", type=float, default=15.0, help="seconds between cuts")
    parser.add_argument("--drain", type=float, default=10.0)
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=15.0)
    parser.add_argument("--transport", default="", choices=["", "websocket", "polling"],
                        help="one transport only (default: the client's, polling first)")
    parser.add_argument("--out", default="test-output/jitter")
    args = parser.parse_args(argv)
    settings = Settings(args.clients, args.rooms, args.rate, args.duration, args.cut,
                        args.drain, args.gateways, args.kill_every, args.transport)
    log = Log()
    install(["node"] if any(s.startswith("node") for s in args.systems.split(",")) else [],
            log)
    raise_nofile(4 * args.clients + 1000, log)
    workdir = Path(args.out).resolve() / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for system in args.systems.split(","):
        if system not in SYSTEMS:
            parser.error(f"unknown system {system!r}")
        print(f"running {system}…", file=sys.stderr, flush=True)
        results[system] = run_one(system, settings, workdir)
    report = table(results, settings)
    (workdir / "report.md").write_text(report + "\n")
    (workdir / "results.json").write_text(json.dumps(results, indent=2))
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
