"""The floor under any server's cost per delivery here: one small write to one loopback TCP
socket, in a tight loop, with another process reading (``python -m bench.sendfloor``).

Every delivery of every server in ``bench/run`` is at least one such write (one WebSocket
frame to one client); on loopback the sender's system call also carries the receiving
side's TCP work and the reader's wake-up. Prints CPU µs per write of the writing process,
plain and with writes to the same socket paired (what corking two frames into one write
saves), so the per-delivery figures of the report can be read against it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import sys
import time


def _reader(sockets: list[socket.socket], expected: int, limit: float) -> None:
    poller = select.epoll()
    by_fd = {s.fileno(): s for s in sockets}
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    got, deadline = 0, time.monotonic() + limit
    while got < expected and time.monotonic() < deadline:
        for fd, _ in poller.poll(0.5):
            with contextlib.suppress(BlockingIOError):
                got += len(by_fd[fd].recv(65536))


def measure(connections: int, rounds: int, size: int, per_write: int) -> float:
    """CPU µs of the writer per frame, ``per_write`` frames joined into each write."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(connections)
    pairs = []
    for _ in range(connections):
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        for s in (client, accepted):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pairs.append((accepted, client))
    data = b"x" * size * per_write
    pid = os.fork()
    if pid == 0:
        _reader([c for _, c in pairs], connections * rounds * len(data), 60.0)
        os._exit(0)
    start = time.process_time()
    for _ in range(rounds):
        for writer, _ in pairs:
            writer.send(data)
        time.sleep(0.002)  # as a paced load: readers are woken, not always busy
    used = time.process_time() - start
    os.waitpid(pid, 0)
    for a, b in pairs:
        a.close()
        b.close()
    server.close()
    return used / (connections * rounds * per_write) * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sendfloor", description=__doc__)
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--size", type=int, default=150, help="bytes per frame (150)")
    args = p.parse_args(argv)
    print("| frames per write | writer CPU µs per frame |")
    print("|---:|---:|")
    for per_write in (1, 2):
        cost = measure(args.connections, args.rounds, args.size, per_write)
        print(f"| {per_write} | {cost:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
