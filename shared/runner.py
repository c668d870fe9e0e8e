"""Runs a :class:`~shared.service.Service` behind its ZeroMQ sockets.

Sockets: a ROUTER bound at ``bind`` (gateways' DEALERs connect; frames ``[identity, body]``)
and the service's publisher (an XPUB connected to the broker). Every request is decoded here
and passes the :class:`~switchboard.shared.dispatch.Dispatcher` — the seam where admission,
timing, metrics, logging and error mapping happen once for every handler of every service.
Requests are handled concurrently (bounded by ``max_inflight``), so one slow handler does
not block the others. Handlers never see ZeroMQ.

An event's FILTER carries the ``route`` it goes on: once this service let it pass, the
runner passes it on (with the cleaned arguments) to the next service over a DEALER of its
own (:class:`Forwarder`), and that one's reply goes straight to the gateway (ZeroMQ routes
it by the gateway DEALER's identity): one request per event instead of one per stage.
A CONNECT goes the same way through the namespace's CONNECT stages (room, game; the gateway
has checked its token and policy before): each passes on the session as it left it and the
joins and emits asked so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import zmq
import zmq.asyncio
from prometheus_client import Counter

from switchboard.shared.dispatch import Dispatcher
from switchboard.shared.envelope import Reply, Request, RequestKind, gateway_identity
from switchboard.shared.errors import EnvelopeError, ServiceUnavailable
from switchboard.shared.loopsocket import LoopSocket, plain_socket, watched_dealer
from switchboard.shared.process import unless_stopped
from switchboard.shared.publisher import ZmqPublisher
from switchboard.shared.service import Service

log = logging.getLogger("switchboard.service")

#: Milliseconds a stopping service gives libzmq to send its last replies.
REPLY_LINGER_MS = 200
#: Longest a service's hand-over on stop (:meth:`Service.hand_over`) may take: a store that
#: does not answer must not hold the stop up (``up`` kills what takes over its grace).
HAND_OVER_TIMEOUT = 5.0

BAD_ENVELOPES = Counter(
    "switchboard_service_bad_envelopes_total", "Undecodable requests dropped", ["service"]
)
FORWARDS = Counter(
    "switchboard_service_forwards_total",
    "Requests (events, CONNECTs) passed on to the next service of their route, by service, "
    "next service and outcome (sent; unavailable: not connected or no endpoint, the gateway "
    "is told; waited: held for the link's first connection, then sent or unavailable)",
    ["service", "to", "outcome"],
)


#: How long a request waits for a forwarding DEALER that has never been connected yet (the
#: service just started, or the next one did): longer than ZeroMQ's reconnect interval.
FIRST_CONNECT_WAIT = 5.0
_WATCHED = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED


class _Link:
    """One forwarding DEALER and whether it has been connected (a socket monitor says)."""

    __slots__ = ("dealer", "monitor", "up", "was_up")

    def __init__(self, context: zmq.Context[Any], addresses: list[str], hwm: int) -> None:
        self.up = asyncio.Event()
        self.was_up = False
        self.dealer, self.monitor = watched_dealer(context, addresses, hwm, _WATCHED,
                                                   self.on_event)

    def on_event(self, event: int) -> None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.up.set()
            self.was_up = True
        elif event == zmq.EVENT_DISCONNECTED:
            self.up.clear()


class Forwarder:
    """A DEALER to every other service a request may be passed on to, connected at start.

    With ``IMMEDIATE`` a message for a service not connected fails at once (the gateway is
    told ``service unavailable``, as its own DEALERs fail fast) — except while a link has
    never been up: services start in any order, and the gateway may already know the next
    service (its readiness handshake went through) before this one's first connection to it
    completes, so such a request waits for it (bounded by its deadline and
    :data:`FIRST_CONNECT_WAIT`)."""

    def __init__(self, source: str, context: zmq.asyncio.Context,
                 endpoints: dict[str, list[str]], hwm: int) -> None:
        self.source = source
        self._links: dict[str, _Link] = {
            name: _Link(context, addresses, hwm)
            for name, addresses in endpoints.items()
            if name != source and addresses
        }
        self._counters: dict[tuple[str, str], Any] = {}

    def start(self) -> None:
        """Watch every link (in the running loop)."""
        for link in self._links.values():
            link.monitor.start()

    async def send(self, service: str, request: Request) -> bool:
        """Queue ``request`` for ``service``; False when it cannot go (no endpoint, not
        connected, queue full)."""
        link = self._links.get(service)
        if link is None:
            log.warning("cannot pass requests on to %s: no endpoint (--services)", service)
            self._count(service, "unavailable")
            return False
        sent = self._try(link, request) or (
            not link.was_up and await self._first_connection(service, link, request)
            and self._try(link, request))
        self._count(service, "sent" if sent else "unavailable")
        return sent

    @staticmethod
    def _try(link: _Link, request: Request) -> bool:
        try:
            link.dealer.send(request.encode(), zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        link.was_up = True
        return True

    async def _first_connection(self, service: str, link: _Link, request: Request) -> bool:
        wait = FIRST_CONNECT_WAIT
        if request.deadline:
            wait = min(wait, request.deadline - time.time())
        if wait <= 0:
            return False
        self._count(service, "waited")
        try:
            await asyncio.wait_for(link.up.wait(), wait)
        except TimeoutError:
            return False
        return True

    def _count(self, service: str, outcome: str) -> None:
        counter = self._counters.get((service, outcome))
        if counter is None:
            counter = self._counters[service, outcome] = FORWARDS.labels(
                self.source, service, outcome)
        counter.inc()

    def close(self) -> None:
        for link in self._links.values():
            link.monitor.close()
            link.dealer.close(linger=0)
        self._links.clear()


@dataclass(frozen=True)
class RunnerConfig:
    """Where a service listens and how it judges its gateways."""

    bind: str
    gateway_timeout: float = 5.0
    max_inflight: int = 1000
    ready_timeout: float = 10.0
    hwm: int = 100_000
    #: Seconds between the publisher's beats (how soon a gateway notices a broken path).
    beat_interval: float = 0.25
    #: Endpoints of the services events are passed on to (see :class:`Forwarder`).
    services: dict[str, list[str]] = field(default_factory=dict)


class Runner:
    """Owns the sockets and the request loop of one service instance."""

    def __init__(
        self,
        service: Service,
        config: RunnerConfig,
        context: zmq.asyncio.Context,
        publisher: ZmqPublisher | None = None,
    ) -> None:
        self.service = service
        self.config = config
        self.context = context
        self.publisher = publisher
        self.dispatcher = Dispatcher(service)
        router = plain_socket(context, zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.RCVHWM, config.hwm)
        router.setsockopt(zmq.SNDHWM, config.hwm)
        # A gateway DEALER that reconnects keeps its identity (replies are routed by it).
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router = LoopSocket(router, self._accept, send_failed=self._reply_dropped)
        self.forwarder = Forwarder(service.name, context, config.services, config.hwm)
        self._inflight: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.router.socket.bind(self.config.bind)
        try:
            if not await unless_stopped(self._start(), stop):
                return
            self.forwarder.start()
            self.ready.set()
            log.info("service %s ready on %s", self.service.name, self.config.bind)
            monitor = asyncio.create_task(self._monitor_gateways(stop))
            beats = asyncio.create_task(self._beat(stop))
            self.router.start()
            try:
                await stop.wait()
            finally:
                try:
                    await asyncio.wait_for(self.service.hand_over(), HAND_OVER_TIMEOUT)
                except Exception:
                    log.exception("service %s: handing over on stop failed", self.service.name)
                self.router.stop_reading()  # in-flight requests below still get replies
                for task in (monitor, beats):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if self._inflight:
                    await asyncio.wait(self._inflight, timeout=5.0)
                await self.service.stop()
        finally:
            # The last replies were just queued: a moment for libzmq to pass them on (a
            # gateway that is gone has them dropped at once, not waited for).
            self.router.close(linger=REPLY_LINGER_MS)
            self.forwarder.close()

    async def _start(self) -> None:
        await self.service.open()
        if self.publisher is not None and not await self.publisher.wait_ready(
            self.config.ready_timeout
        ):
            log.warning("broker not reachable yet; publishing will start when it is")
        await self.service.start()

    def _accept(self, frames: list[bytes]) -> None:
        """A batch of requests from one peer: ``[identity, request, request, ...]``."""
        if len(frames) < 2:
            BAD_ENVELOPES.labels(self.service.name).inc()
            return
        identity = frames[0]
        for body in frames[1:]:
            try:
                self._accept_one(identity, body)
            except Exception:  # one bad request must not cost the rest of its batch
                log.exception("accepting a request failed")

    def _accept_one(self, identity: bytes, body: bytes) -> None:
        try:
            request = Request.decode(body)
        except EnvelopeError as exc:
            BAD_ENVELOPES.labels(self.service.name).inc()
            log.warning("dropped undecodable request: %s", exc)
            return
        if not self.dispatcher.admit(request):
            return
        if request.forwarded:
            # Passed on by another service: the answer goes to the gateway that sent it.
            identity = gateway_identity(request.gateway, request.instance)
        if len(self._inflight) >= self.config.max_inflight:
            # Over capacity: answer at once rather than queue without bound.
            self._reply(identity, Reply(request.id, ok=False, error="service busy"))
            return
        task = asyncio.create_task(self._handle(identity, request))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _handle(self, identity: bytes, request: Request) -> None:
        reply = await self.dispatcher.handle(request)
        name = self.service.name
        while request.route and reply.ok and request.kind in ROUTED:
            nxt, request = passed_on(request, reply)
            if nxt != name:
                if await self.forwarder.send(nxt, request):
                    return  # nxt answers the gateway
                reply = Reply(request.id, ok=False, error=ServiceUnavailable.client_message)
                break
            # The next stage is this service's own (an event it filters and owns).
            if not self.dispatcher.admit(request):
                return
            reply = await self.dispatcher.handle(request)
        reply = answer_for(request, reply, name)
        self._reply(identity, reply)

    def _reply(self, identity: bytes, reply: Reply) -> None:
        if self.router.socket.closed:
            return  # stopped meanwhile
        # With the others to that gateway of this loop iteration (shared.loopsocket).
        self.router.send_soon(reply.encode(), identity)

    @staticmethod
    def _reply_dropped(identity: bytes, tags: list[Any], exc: zmq.ZMQError) -> None:
        # The gateway is gone or its queue is full: nothing to answer.
        log.debug("%d replies dropped: %s", len(tags), exc)

    async def _beat(self, stop: asyncio.Event) -> None:
        publisher = self.publisher
        if publisher is None or not publisher.journals:
            return
        while not stop.is_set():
            publisher.beat()
            await asyncio.sleep(self.config.beat_interval)

    async def _monitor_gateways(self, stop: asyncio.Event) -> None:
        interval = max(self.config.gateway_timeout / 4, 0.05)
        while not stop.is_set():
            await asyncio.sleep(interval)
            if self.publisher is not None:
                self.publisher.drain_subscriptions()
            await self.dispatcher.expire_gateways(self.config.gateway_timeout)


#: Requests that go along a ``route`` from service to service (see ``Request.route``).
ROUTED = frozenset({RequestKind.FILTER, RequestKind.CONNECT})


def passed_on(request: Request, reply: Reply) -> tuple[str, Request]:
    """The next stage of a routed request this stage let pass, and what it gets: a filter's
    cleaned arguments (the owner gets it as EVENT); a CONNECT stage's session, joins and
    emits (the last stage answers them all)."""
    nxt, rest = request.route[0], request.route[1:]
    if request.kind == RequestKind.CONNECT:
        return nxt, replace(
            request, route=rest, forwarded=True,
            session=reply.session or request.session,
            joins=(*request.joins, *reply.joins), emits=(*request.emits, *reply.emits))
    return nxt, replace(
        request, kind=RequestKind.FILTER if rest else RequestKind.EVENT, route=rest,
        forwarded=True, args=request.args if reply.args is None else reply.args)


def answer_for(request: Request, reply: Reply, name: str) -> Reply:
    """What service ``name``, the last to handle a request, answers the gateway with."""
    if not (request.forwarded or request.route):
        return reply
    reply = replace(reply, service=name)  # the gateway resyncs whoever asked
    if request.kind == RequestKind.CONNECT:
        # This stage answers for all: the session as the stages so far left it (a
        # refusal's DISCONNECTs name it), and what the ones before asked for first.
        reply = replace(reply, session=reply.session or request.session)
        if reply.ok:
            reply = replace(reply, joins=(*request.joins, *reply.joins),
                            emits=(*request.emits, *reply.emits))
    return reply


async def serve(
    service: Service,
    config: RunnerConfig,
    context: zmq.asyncio.Context,
    publisher: ZmqPublisher | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run ``service`` until ``stop`` is set (or forever)."""
    runner = Runner(service, config, context, publisher)
    await runner.run(stop or asyncio.Event())


