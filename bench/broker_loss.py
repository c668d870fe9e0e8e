"""What a broker's death costs in delivery latency: ``python -m bench.broker_loss``.

Two brokers (real processes), a numbered publisher (the services' ``ZmqPublisher`` with its
journal and beats) publishing one room's messages at a steady rate, and a subscriber that is
the gateway's own delivery path (``Subscriptions``, ``Fanout``, ``Continuity``, and the
replay it asks for, answered from the publisher's journal). The room's broker is killed
(SIGKILL) and started again a moment later, in two designs side by side:

- ``by topic`` (what switchboard runs): each topic lives on one broker; its death holds the
  topic's stream until the new broker is heard, has our subscriptions, and the replay has
  returned what the dead one lost;
- ``duplicated``: every publication goes to both brokers under one number, the subscriber
  subscribes at both and drops the second copy by number (``Continuity`` already does); a
  broker's death is then only a missing copy.

Per design it prints the latency (publish → first delivery) of the messages published from
just before the kill to a few seconds after, p50 / p99 / max, how many never arrived, how
many arrived twice, and the CPU each delivered message cost the subscriber (the second copy
included). Every loop is bounded in count and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from switchboard.gateway import metrics as m
from switchboard.gateway.continuity import AskReplay, Continuity
from switchboard.gateway.fanout import Fanout
from switchboard.gateway.index import LocalIndex
from switchboard.gateway.subscriptions import Subscriptions, wait_all
from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, Publication
from switchboard.shared.journal import Journal
from switchboard.shared.publisher import ZmqPublisher
from tests.support.ports import free_port

ROOM = "lobby"
TOPIC = topics.room("/", ROOM)


class Broker:
    """A ``switchboard broker`` process on fixed loopback ports (restartable in place)."""

    def __init__(self) -> None:
        self.publish = f"tcp://127.0.0.1:{free_port()}"
        self.subscribe = f"tcp://127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "switchboard", "broker", "--publish-bind", self.publish,
             "--subscribe-bind", self.subscribe, "--heartbeat-interval", "0.2",
             "--log-level", "warning"])

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)


class DuplicatingPublisher(ZmqPublisher):
    """Every publication (and beat) to every broker, under one number (one journal)."""

    def __init__(self, context: zmq.Context[Any], endpoints: list[str], journal: Journal):
        super().__init__(context, endpoints, "room")
        self.journal = journal
        self.journals = (journal,)

    def publish(self, topic: bytes, publication: Publication) -> None:
        stamp = self.journal.stamp()
        body = publication.encode_stamped(stamp.origin, stamp.seq, stamp.epoch)
        self.journal.record(stamp.seq, time.monotonic(), topic, body)
        for path in self.paths:
            path.socket.send_multipart((topic, body), flags=zmq.NOBLOCK)

    def beat(self) -> None:
        self.drain_subscriptions()  # a broker coming back breaks nothing: the other carried on
        stamp = self.journal.beat(time.monotonic())
        body = Publication(PubKind.BEAT, "", source=self.source).encode_stamped(
            stamp.origin, stamp.seq, stamp.epoch)
        for path in self.paths:
            path.socket.send_multipart((topics.ALL_GATEWAYS, body), flags=zmq.NOBLOCK)


class EverywhereSubscriptions(Subscriptions):
    """Every topic at every broker; the first confirmation is enough."""

    def _where(self, topic: bytes) -> Any:
        return self.links

    def home(self, topic: bytes) -> int:
        return 0


class TrustingContinuity(Continuity):
    """A broker's restart makes nothing suspect: the other broker carried every number."""

    def broker_changed(self, broker: int = 0) -> None:
        return None


class Recorder(Fanout):
    """The gateway's fan-out, recording when each publication is delivered."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.first: dict[int, float] = {}
        self.delivered: dict[int, int] = {}

    def _handle(self, publication: Publication) -> None:
        if publication.args:
            n = publication.args[0]
            self.first.setdefault(n, time.monotonic())
            self.delivered[n] = self.delivered.get(n, 0) + 1


class Actions:
    """What the fan-out asks of the gateway: only replays matter here."""

    def __init__(self, journals: dict[str, Journal]) -> None:
        self.journals = journals
        self.fanout: Recorder | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def replay(self, ask: AskReplay) -> None:
        async def run() -> None:
            assert self.fanout is not None
            await self.fanout.before_replay(ask, 2.0)  # as the gateway does
            journal = self.journals.get(ask.origin)
            self.fanout.replayed(ask.origin, None if journal is None
                                 else journal.replay(ask.after))
        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


@dataclass
class Result:
    design: str
    published: int = 0
    latencies: list[float] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    cpu_us: float = 0.0


async def run_design(design: str, rate: float, seconds: float, kill_at: float,
                     down: float) -> Result:
    brokers = [Broker(), Broker()]
    for broker in brokers:
        broker.start()
    ctx = zmq.asyncio.Context()
    duplicated = design == "duplicated"
    journal = Journal(origin=f"bench-{design[:3]}")
    if duplicated:
        publisher: ZmqPublisher = DuplicatingPublisher(ctx, [b.publish for b in brokers],
                                                      journal)
        subs: Subscriptions = EverywhereSubscriptions(ctx, [b.subscribe for b in brokers],
                                                      lambda f, k: fanout.on_message(f, k))
    else:
        publisher = ZmqPublisher(ctx, [b.publish for b in brokers], "room", journal=journal)
        subs = Subscriptions(ctx, [b.subscribe for b in brokers],
                             lambda f, k: fanout.on_message(f, k),
                             on_reconnect=lambda lost, k: fanout.reconnected(lost, k))
    actions = Actions({j.origin: j for j in publisher.journals})
    fanout = Recorder(subs, LocalIndex(subs), actions, m.EventMeters(), brokers=2)  # type: ignore[arg-type]
    if duplicated:
        fanout.continuity = TrustingContinuity()
        # Its one origin comes through both brokers by design: not a misconfiguration.
        fanout._check_path = lambda beat, broker: None  # type: ignore[method-assign]
    actions.fanout = fanout
    victim = 0 if duplicated else topics.broker_of(TOPIC, 2)
    result = Result(design)
    try:
        subs.start()
        for topic in (TOPIC, topics.BROKER_HEARTBEAT, topics.ALL_GATEWAYS):
            subs.add(topic)
        await asyncio.wait_for(fanout.broker_seen.wait(), 10)
        await wait_all([subs.add(TOPIC)], 5)
        assert await publisher.wait_ready(10), "brokers did not subscribe to the publisher"
        loop = asyncio.get_running_loop()
        start, began = loop.time(), time.monotonic()
        sent: dict[int, float] = {}
        n, next_beat, killed = 0, start, False
        cpu_before = time.process_time()
        while loop.time() - start < seconds and n < 100_000:
            now = loop.time()
            if now >= next_beat:
                publisher.beat()
                next_beat = now + 0.25
            if not killed and now - start >= kill_at:
                brokers[victim].kill()
                killed = True
                loop.call_later(down, brokers[victim].start)
            n += 1
            sent[n] = time.monotonic()
            publisher.emit_room("/", ROOM, "m", [n])
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
        deadline = loop.time() + 10
        while len(fanout.first) < n and loop.time() < deadline:
            await asyncio.sleep(0.05)
        cpu = time.process_time() - cpu_before
        result.published = n
        window = (kill_at - 0.5, kill_at + down + 3.0)
        for k, at in sent.items():
            offset = at - began
            if window[0] <= offset <= window[1] and k in fanout.first:
                result.latencies.append(fanout.first[k] - at)
        result.lost = n - len(fanout.first)
        result.duplicated = sum(1 for c in fanout.delivered.values() if c > 1)
        # The whole process's CPU (publisher included) per message: compared side by side.
        result.cpu_us = cpu / max(n, 1) * 1e6
    finally:
        publisher.close()
        subs.close()
        ctx.term()
        for broker in brokers:
            broker.stop()
    return result


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def amain(args: argparse.Namespace) -> int:
    results = []
    for design in args.designs:
        results.append(await run_design(design, args.rate, args.seconds, args.kill_at,
                                        args.down))
    print(f"\n**Broker death** (`python -m bench.broker_loss`): {args.rate:g} msg/s on one "
          f"room, its broker killed at {args.kill_at:g} s and restarted {args.down:g} s "
          f"later; latency of messages published from 0.5 s before the kill to 3 s after "
          f"the restart\n")
    print("| design | published | p50 ms | p99 ms | max ms | lost | delivered twice "
          "| CPU µs/msg (publisher + subscriber) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.design} | {r.published} | {pct(r.latencies, 0.5) * 1e3:.1f} | "
              f"{pct(r.latencies, 0.99) * 1e3:.0f} | {max(r.latencies) * 1e3:.0f} | "
              f"{r.lost} | {r.duplicated} | {r.cpu_us:.0f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=200.0, help="messages per second")
    p.add_argument("--seconds", type=float, default=8.0, help="how long to publish")
    p.add_argument("--kill-at", type=float, default=3.0, help="seconds in: kill the broker")
    p.add_argument("--down", type=float, default=0.5,
                   help="seconds until the killed broker is started again")
    p.add_argument("--designs", type=lambda v: v.split(","),
                   default=["by topic", "duplicated"], help="comma-separated")
    return asyncio.run(amain(p.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
