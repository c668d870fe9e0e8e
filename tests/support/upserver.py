"""``switchboard up`` as a subprocess of a test: free ports for it, starting it with its
output to a file, and the process table through which its children are found."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def free_port_block(size: int = 21, host: str = HOST) -> int:
    """A base port with ``size`` consecutive free ports (``up --internal-port`` uses 21).

    Chosen below the kernel's ephemeral range so outgoing connections do not take them.
    """
    for _ in range(200):
        base = random.randrange(20000, 32000 - size)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + size):
                    sock = stack.enter_context(socket.socket())
                    sock.bind((host, port))
            return base
        except OSError:
            continue
    raise RuntimeError("no block of free ports found")


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


def spawn_up(workdir: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``switchboard up ARGS`` in a session of its own, unbuffered, its output (stdout and
    stderr) to ``workdir/up.log``; the process and that log."""
    log = workdir / "up.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "switchboard", "up", *args],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return process, log
