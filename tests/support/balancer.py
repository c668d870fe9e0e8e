"""A real HAProxy in front of gateways, for tests: ``balance roundrobin``, no stickiness, so
consecutive requests of one client (polling GETs and POSTs, the upgrade) land on different
gateways; optionally refusing WebSocket upgrades, as corporate proxies do."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_port

TEMPLATE = """\
global
    log stdout format raw local0 info
    hard-stop-after 3s

defaults
    mode http
    option forwardfor
    option redispatch 1
    retries 2
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout tunnel 1h

frontend public
    bind {host}:{port}
{refuse}    default_backend gateways

backend gateways
    balance roundrobin
{servers}
"""

#: What a proxy that blocks WebSocket does: the upgrade request is answered 403.
REFUSE_WEBSOCKET = "    http-request deny deny_status 403 if { hdr(upgrade) -i websocket }\n"


def find_haproxy() -> str | None:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    return binary if Path(binary).exists() else None


def haproxy_binary() -> str:
    """HAProxy's path; in a test without it, a skip (a failure in CI)."""
    binary = find_haproxy()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("haproxy is not installed (scripts/ensure-system-deps installs it)")
        pytest.skip("haproxy is not installed (run scripts/ensure-system-deps)")
    return binary


@contextlib.contextmanager
def balancer(workdir: Path, ports: Sequence[int], host: str = "127.0.0.1",
             refuse_websocket: bool = False, port: int = 0) -> Iterator[str]:
    """HAProxy for the block (on ``port``, or a free one); yields its base URL."""
    with run_haproxy(haproxy_binary(), workdir, ports, host, refuse_websocket, port) as url:
        yield url


@contextlib.contextmanager
def balanced(cluster: Any, workdir: Path) -> Iterator[Any]:
    """A started cluster (tests.support.cluster.Cluster) behind HAProxy for the block: its
    test clients connect through the balancer; stopped at the end."""
    try:
        with balancer(workdir, cluster.gateway_ports) as url:
            cluster.balancer_url, cluster.balanced = url, len(cluster.gateway_ports)
            yield cluster
    finally:
        cluster.stop()


def listens(pid: int, host: str, port: int) -> bool:
    """Whether process ``pid`` holds a TCP socket listening on ``host:port`` (IPv4), from
    /proc/net/tcp and the process's file descriptors."""
    wanted = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return True
    return False


@contextlib.contextmanager
def run_haproxy(binary: str, workdir: Path, ports: Sequence[int], host: str = "127.0.0.1",
                refuse_websocket: bool = False, port: int = 0) -> Iterator[str]:
    """HAProxy ``binary`` for the block, outside pytest too (the chaos run uses it)."""
    port = port or free_port(host)
    servers = "".join(f"    server gw{i} {host}:{p}\n" for i, p in enumerate(ports))
    config = TEMPLATE.format(host=host, port=port, servers=servers,
                             refuse=REFUSE_WEBSOCKET if refuse_websocket else "")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"haproxy-{port}.cfg"
    path.write_text(config)
    log = workdir / f"haproxy-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([binary, "-db", "-f", str(path)], stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        # Ready when this HAProxy holds the listening socket, not when something answers
        # on the port: another listener there would answer, and take its traffic.
        while not listens(process.pid, host, port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
