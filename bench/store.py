"""What one room instance's store sustains: ``python -m bench.store``.

The room service's own store (``services.room.store``), on a durable PostgreSQL server of
its own (Debian's package, fsync and synchronous commit on, as deployed; data in a
temporary directory, stopped afterwards) and on a SQLite file, driven as the service drives
it: each sender is a handler that queues one chat message and awaits ``committed()`` (what
precedes every ack), then the next. Per store and number of concurrent senders it prints the
inserts/s sustained, the latency of insert → committed (p50, p99, max), and the mean
messages per commit (group commit at work). ``one commit each`` is the baseline without
group commit: every message its own transaction on the pool (PostgreSQL only).

Every run is bounded in time (``--seconds``) and count (``--max-messages``); loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.broker_loss import pct
from switchboard.services.room.model import Message
from switchboard.services.room.store import PostgresStore, RoomStore, SqliteStore
from switchboard.shared.store import StoreConfig
from tests.support.postgres import PostgresServer


@dataclass
class Result:
    store: str
    senders: int
    messages: int
    seconds: float
    latencies: list[float]
    commits: int
    cpu: float = 0.0

    def row(self) -> str:
        per_commit = f"{self.messages / self.commits:.1f}" if self.commits else "n/a"
        lat = [x * 1000 for x in self.latencies]
        return (f"| {self.store} | {self.senders} | {self.messages / self.seconds:,.0f} | "
                f"{pct(lat, 0.5):.2f} | {pct(lat, 0.99):.2f} | {max(lat):.2f} | "
                f"{per_commit} | {self.cpu / max(1, self.messages) * 1e6:.0f} |")


_ids = itertools.count()


def _message(room: str) -> Message:
    n = next(_ids)
    return Message(f"bench-{n}", "/", room, "u1", None, "Ann", f"message {n} " + "x" * 60,
                   "text", 1_700_000_000_000 + n)


async def drive(store: RoomStore, name: str, senders: int, seconds: float,
                limit: int, commits: Callable[[], int] | None) -> Result:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def sender(k: int) -> None:
        room = f"room-{k % 50}"
        while time.perf_counter() < deadline and len(latencies) < limit:
            began = time.perf_counter()
            store.insert_message(_message(room))
            await store.committed()
            latencies.append(time.perf_counter() - began)

    began, cpu = time.perf_counter(), time.process_time()
    before = commits() if commits else 0
    await asyncio.wait_for(asyncio.gather(*(sender(k) for k in range(senders))), seconds + 30)
    elapsed = time.perf_counter() - began
    after = commits() if commits else 0
    return Result(name, senders, len(latencies), elapsed, latencies, after - before,
                  time.process_time() - cpu)


async def one_commit_each(store: PostgresStore, senders: int, seconds: float,
                          limit: int) -> Result:
    """The baseline: each message its own INSERT and COMMIT on the pool."""
    pool = store.writes.pool
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    sql = ("INSERT INTO messages (id, namespace, room, sender, recipient, username, content, "
           "type, ts_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")

    async def sender(k: int) -> None:
        while time.perf_counter() < deadline and len(latencies) < limit:
            m = _message(f"room-{k % 50}")
            began = time.perf_counter()
            await pool.execute(sql, m.id, m.namespace, m.room, m.sender, m.recipient,
                               m.username, m.content, m.type, m.ts_ms)
            latencies.append(time.perf_counter() - began)

    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.wait_for(asyncio.gather(*(sender(k) for k in range(senders))), seconds + 30)
    return Result("postgresql, one commit each", senders, len(latencies),
                  time.perf_counter() - began, latencies, len(latencies),
                  time.process_time() - cpu)


async def amain(args: argparse.Namespace) -> int:
    results: list[Result] = []
    workdir = Path(tempfile.mkdtemp(prefix="switchboard-bench-store-"))
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="switchboard-bench-pg-")),
                            durable=True)
    server.start()
    try:
        for senders in args.senders:
            for kind in args.stores:
                if kind == "postgresql":
                    pg = PostgresStore(StoreConfig(server.fresh_url(),
                                                   store_pool_size=args.pool_size))
                    await pg.open()
                    try:
                        results.append(await drive(
                            pg, "postgresql, group commit", senders, args.seconds,
                            args.max_messages, lambda pg=pg: pg.writes.batches))
                        results.append(await one_commit_each(pg, senders, args.seconds,
                                                             args.max_messages))
                    finally:
                        await pg.close()
                else:
                    path = workdir / f"room-{senders}.sqlite3"
                    lite = SqliteStore(str(path))
                    try:
                        results.append(await drive(lite, "sqlite, group commit", senders,
                                                   args.seconds, args.max_messages, None))
                    finally:
                        await lite.close()
                print(results[-1].row(), file=sys.stderr, flush=True)
    finally:
        server.stop()
    print(f"\nStore of one room instance: {args.seconds:g} s per row, "
          f"PostgreSQL {server.bin.parent.name} durable (fsync, synchronous_commit on), "
          f"pool {args.pool_size}\n")
    print("| store | senders | inserts/s | p50 ms | p99 ms | max ms | messages per commit "
          "| instance CPU µs/msg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        print(result.row())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--senders", type=lambda v: [int(x) for x in v.split(",")],
                   default=[1, 10, 100, 1000], help="concurrent senders per row, e.g. 1,10,100")
    p.add_argument("--stores", type=lambda v: v.split(","), default=["postgresql", "sqlite"],
                   help="postgresql, sqlite, or both")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per row")
    p.add_argument("--max-messages", type=int, default=500_000, help="messages per row, at most")
    p.add_argument("--pool-size", type=int, default=4, help="--store-pool-size")
    return asyncio.run(amain(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
