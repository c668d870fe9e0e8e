"""The PUB/SUB broker: publishers (services) → XSUB ⇄ XPUB → subscribers (gateways).

Why not a plain ``zmq.proxy``: two things a plain proxy cannot do.

1. The broker subscribes its XSUB to *everything* and does all topic filtering at its XPUB.
   Publishers therefore never need to learn subscriptions, and a subscription is in force the
   moment the broker has seen it. The broker then sends a confirmation on that very topic
   (``[topic, SUBSCRIBED_MARKER]``): a gateway that joins a socket to a new room waits for it,
   so the first message to the room after the join cannot be lost (no slow-joiner gap).
2. It publishes a heartbeat on :data:`shared.topics.BROKER_HEARTBEAT`; gateways count missed
   beats, so a broker restart or a half-open connection is noticed, not silently deaf.

ZeroMQ reconnects both sides after a broker restart and re-sends subscriptions by itself.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq
from prometheus_client import Counter, Gauge

from switchboard.shared import checks, ports, topics
from switchboard.shared.config import setting

log = logging.getLogger("switchboard.broker")

MESSAGES = Counter("switchboard_broker_messages_total", "Messages forwarded to subscribers")
SUBSCRIPTIONS = Counter(
    "switchboard_broker_subscriptions_total", "Subscription changes seen", ["change"]
)
TOPICS = Gauge("switchboard_broker_topics", "Distinct topics subscribed")


@dataclass(frozen=True)
class BrokerConfig:
    name: str = setting("broker", "This broker's name in its logs (broker-1 of several).",
                        check=checks.service_name)
    publish_bind: str = setting(
        ports.local(ports.BROKER_PUBLISH), "Where publishers (services) connect: the XSUB side.",
        check=checks.bind_endpoint,
    )
    subscribe_bind: str = setting(
        ports.local(ports.BROKER_SUBSCRIBE),
        "Where subscribers (gateways) connect: the XPUB side.", check=checks.bind_endpoint,
    )
    heartbeat_interval: float = setting(1.0, "Seconds between broker heartbeats.")
    hwm: int = setting(100_000, "ZeroMQ high-water mark per peer, messages.")
    metrics_port: int = setting(0, "Port for Prometheus /metrics on 127.0.0.1 (0: off).")
    metrics_host: str = setting("127.0.0.1", "Address for the metrics endpoint.")


@dataclass
class BrokerStats:
    forwarded: int = 0
    subscribes: int = 0
    unsubscribes: int = 0
    topics: dict[bytes, int] = field(default_factory=dict)


class Broker:
    def __init__(self, config: BrokerConfig, context: zmq.Context[Any] | None = None) -> None:
        self.config = config
        self.context = context or zmq.Context.instance()
        self.instance = secrets.token_hex(4)
        self.stats = BrokerStats()
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        cfg = self.config
        xsub = self.context.socket(zmq.XSUB)
        xpub = self.context.socket(zmq.XPUB)
        try:
            for sock in (xsub, xpub):
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RCVHWM, cfg.hwm)
                sock.setsockopt(zmq.SNDHWM, cfg.hwm)
            # Every subscribe reaches us, duplicates included, so each subscriber is confirmed.
            xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
            xsub.bind(cfg.publish_bind)
            xpub.bind(cfg.subscribe_bind)
            xsub.send(b"\x01")  # subscribe to everything upstream; filtering happens at XPUB
            poller = zmq.Poller()
            poller.register(xsub, zmq.POLLIN)
            poller.register(xpub, zmq.POLLIN)
            self.ready.set()
            log.info(
                "%s ready: publishers → %s, subscribers → %s", cfg.name,
                cfg.publish_bind,
                cfg.subscribe_bind,
            )
            seq = 0
            next_beat = time.monotonic()
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    seq += 1
                    xpub.send_multipart(
                        (topics.BROKER_HEARTBEAT, msgpack.packb((self.instance, seq)))
                    )
                    next_beat = now + cfg.heartbeat_interval
                timeout = max(0, min(int((next_beat - now) * 1000), 100))
                for sock, _ in poller.poll(timeout):
                    if sock is xsub:
                        self._forward(xsub, xpub)
                    else:
                        self._subscription(xpub)
        finally:
            xsub.close(linger=0)
            xpub.close(linger=0)
            log.info("%s stopped after forwarding %d messages", cfg.name, self.stats.forwarded)

    def _forward(self, xsub: zmq.Socket[Any], xpub: zmq.Socket[Any]) -> None:
        # Drain in a batch: one poll wake-up can move many messages. Messages are small
        # (copying beats zero-copy frames), and the readiness check costs less than the
        # exception a final empty read would raise.
        moved = 0
        while moved < 1000 and int(xsub.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            xpub.send_multipart(xsub.recv_multipart(zmq.NOBLOCK))
            moved += 1
        self.stats.forwarded += moved
        MESSAGES.inc(moved)

    def _subscription(self, xpub: zmq.Socket[Any]) -> None:
        while True:
            try:
                msg = xpub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not msg:
                continue
            topic = msg[1:]
            if msg[0] == 1:
                self.stats.subscribes += 1
                SUBSCRIPTIONS.labels("subscribe").inc()
                self.stats.topics[topic] = self.stats.topics.get(topic, 0) + 1
                TOPICS.set(len(self.stats.topics))
                xpub.send_multipart((topic, topics.SUBSCRIBED_MARKER))
            elif msg[0] == 0:
                self.stats.unsubscribes += 1
                SUBSCRIPTIONS.labels("unsubscribe").inc()
                count = self.stats.topics.get(topic, 0) - 1
                if count <= 0:
                    self.stats.topics.pop(topic, None)
                else:
                    self.stats.topics[topic] = count
                TOPICS.set(len(self.stats.topics))


