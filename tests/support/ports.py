"""Free loopback ports for tests and benchmarks.

Chosen below the kernel's ephemeral range, so that no outgoing connection takes one between
its choice and the bind of whatever it is for, and never the same one twice in a process, so
that parts started one after another cannot be handed one port (a port asked of the kernel
with ``bind(0)`` and closed again is free to be handed out once more, and was: a page server
and a gateway of the same test met on one).
"""

from __future__ import annotations

import contextlib
import random
import socket
from pathlib import Path

HOST = "127.0.0.1"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


LOW = 20000
HIGH = min(32000, _ephemeral_low())
_given: set[int] = set()


def free_port_block(size: int = 1, host: str = HOST) -> int:
    """A base port with ``size`` consecutive free ports (``up --internal-port`` uses 21)."""
    for _ in range(500):
        base = random.randrange(LOW, HIGH - size)
        block = range(base, base + size)
        if any(port in _given for port in block):
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in block:
                    sock = stack.enter_context(socket.socket())
                    sock.bind((host, port))
        except OSError:
            continue
        _given.update(block)
        return base
    raise RuntimeError(f"no block of {size} free ports found in {LOW}..{HIGH}")


def free_port(host: str = HOST) -> int:
    return free_port_block(1, host)


def tcp(host: str = HOST) -> str:
    """A ZeroMQ TCP endpoint on a free port."""
    return f"tcp://{host}:{free_port(host)}"
