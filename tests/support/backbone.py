"""Real ZeroMQ plumbing for service-level tests: a broker thread, a service runner and a
fake gateway (a DEALER for requests plus a SUB for publications). No client, no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from switchboard.broker.broker import Broker, BrokerConfig
from switchboard.shared import topics
from switchboard.shared.envelope import (
    GatewayStatus,
    Publication,
    Reply,
    Request,
    RequestKind,
    Session,
    SocketState,
    gateway_identity,
)
from switchboard.shared.journal import Journal
from switchboard.shared.publisher import ZmqPublisher
from switchboard.shared.runner import Runner, RunnerConfig
from switchboard.shared.service import Service
from tests.support.ports import tcp

S = TypeVar("S", bound=Service)


@contextlib.contextmanager
def running_broker(timeout: float = 5.0) -> Any:
    """A broker in a thread on free loopback ports; yields its BrokerConfig."""
    with running_brokers(1, timeout) as (broker,):
        yield broker.config


@contextlib.contextmanager
def running_brokers(count: int, timeout: float = 5.0) -> Any:
    """``count`` brokers, each in a thread on free loopback ports; yields the Brokers."""
    brokers, threads = [], []
    stop = threading.Event()
    try:
        for _ in range(count):
            config = BrokerConfig(publish_bind=tcp(), subscribe_bind=tcp(),
                                  heartbeat_interval=0.2)
            broker = Broker(config, zmq.Context())
            thread = threading.Thread(target=broker.run, args=(stop,), daemon=True)
            thread.start()
            brokers.append(broker)
            threads.append(thread)
            assert broker.ready.wait(timeout), "broker did not start"
        yield brokers
    finally:
        stop.set()
        for broker, thread in zip(brokers, threads, strict=True):
            thread.join(timeout)
            broker.context.term()


@contextlib.asynccontextmanager
async def running_service(
    service_factory: Callable[[ZmqPublisher], S], broker: BrokerConfig | list[BrokerConfig],
    gateway_timeout: float = 5.0, services: dict[str, list[str]] | None = None, bind: str = "",
) -> AsyncIterator[tuple[S, RunnerConfig]]:
    """Run the service built by ``service_factory(publisher)`` behind a real ROUTER socket
    (publishing to every broker of ``broker``)."""
    ctx = zmq.asyncio.Context()
    listed = broker if isinstance(broker, list) else [broker]
    publisher = ZmqPublisher(ctx, [b.publish_bind for b in listed], "test-service",
                             journal=Journal())
    service = service_factory(publisher)
    publisher.source = service.name
    config = RunnerConfig(bind=bind or tcp(),
                          gateway_timeout=gateway_timeout, services=services or {})
    runner = Runner(service, config, ctx, publisher)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await asyncio.wait_for(runner.ready.wait(), 10)
    try:
        yield service, config
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        publisher.close()
        ctx.term()


class FakeGateway:
    """Speaks to services the way a gateway does, for tests without a client."""

    def __init__(
        self, gateway_id: str = "gwtest", broker: BrokerConfig | None = None, instance: str = ""
    ) -> None:
        self.id = gateway_id
        #: The process instance id sent with every request ("" sends none).
        self.instance = instance
        self.ctx = zmq.asyncio.Context()
        self._ids = itertools.count(1)
        self.dealers: dict[str, zmq.asyncio.Socket] = {}
        #: What a SYNC from this fake gateway reports (tests may fill it).
        self.sockets: list[SocketState] = []
        self.sub: zmq.asyncio.Socket | None = None
        if broker is not None:
            self.sub = self.ctx.socket(zmq.SUB)
            self.sub.setsockopt(zmq.LINGER, 0)
            self.sub.connect(broker.subscribe_bind)

    def connect(self, endpoint: str) -> None:
        dealer = self.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        # As a real gateway's: a service answers an event passed on to it by this id.
        dealer.setsockopt(zmq.ROUTING_ID, gateway_identity(self.id, self.instance))
        dealer.connect(endpoint)
        self.dealers[endpoint] = dealer

    def session(self, n: int = 1, ns: str = "/", **kw: Any) -> Session:
        return Session(sid=f"{self.id}.s{n}", ns=ns, gateway=self.id, address="127.0.0.1",
                       connected_at=time.time(), **kw)

    async def request(self, endpoint: str, timeout: float = 5.0, **fields: Any) -> Reply:
        """Send ``Request(**fields)`` (id and gateway filled in) and await its reply.

        Like a real gateway, answers a ``resync`` reply with a SYNC (of ``self.sockets``)
        and sends the request again.
        """
        reply = await self._request(endpoint, timeout, **fields)
        if reply.resync:
            await self._request(endpoint, timeout, kind=RequestKind.SYNC,
                                sockets=tuple(self.sockets))
            reply = await self._request(endpoint, timeout, **fields)
        return reply

    async def _request(self, endpoint: str, timeout: float, answered_at: str = "",
                       **fields: Any) -> Reply:
        """``answered_at``: the endpoint whose service answers (a routed event's owner)."""
        for name in (endpoint, answered_at or endpoint):
            if name not in self.dealers:
                self.connect(name)
        fields.setdefault("gateway", self.id)
        fields.setdefault("instance", self.instance)
        request = Request(id=next(self._ids), **fields)
        await self.dealers[endpoint].send(request.encode())
        dealer = self.dealers[answered_at or endpoint]
        while True:
            body = await asyncio.wait_for(dealer.recv(), timeout)
            reply = Reply.decode(body)
            if reply.id == request.id:
                return reply

    async def heartbeat(self, endpoint: str, connections: dict[str, int] | None = None) -> Reply:
        status = GatewayStatus(time.time(), connections or {}, "127.0.0.1:0")
        return await self.request(endpoint, kind=RequestKind.HEARTBEAT, status=status)

    async def subscribe(self, topic: bytes, timeout: float = 5.0) -> None:
        """Subscribe and wait for the broker's confirmation (no slow-joiner race)."""
        assert self.sub is not None, "FakeGateway needs a broker to subscribe"
        self.sub.setsockopt(zmq.SUBSCRIBE, topic)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            frames = await asyncio.wait_for(self.sub.recv_multipart(), max(left, 0.001))
            if frames[0] == topic and frames[1] == topics.SUBSCRIBED_MARKER:
                return

    async def next_publication(self, timeout: float = 5.0) -> tuple[bytes, Publication]:
        assert self.sub is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            topic, body = await asyncio.wait_for(self.sub.recv_multipart(), max(left, 0.001))
            if body == topics.SUBSCRIBED_MARKER or topic == topics.BROKER_HEARTBEAT:
                continue
            return topic, Publication.decode(body)

    def close(self) -> None:
        for dealer in self.dealers.values():
            dealer.close(linger=0)
        if self.sub is not None:
            self.sub.close(linger=0)
        self.ctx.term()
