"""Runs a :class:`~shared.service.Service` behind its ZeroMQ sockets.

This is the seam: decoding, dispatch, timing, metrics, logging and error mapping happen here
once, for every handler of every service. Handlers never see ZeroMQ.

Sockets: a ROUTER bound at ``bind`` (gateways' DEALERs connect; frames ``[identity, body]``)
and the service's publisher (an XPUB connected to the broker). Requests are handled
concurrently (bounded by ``max_inflight``), so one slow handler does not block the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio
from prometheus_client import Counter, Histogram

from switchboard.shared.envelope import Reply, Request, RequestKind
from switchboard.shared.errors import ClientError, EnvelopeError
from switchboard.shared.loopsocket import LoopSocket, plain_socket
from switchboard.shared.publisher import ZmqPublisher
from switchboard.shared.service import Service

log = logging.getLogger("switchboard.service")

REQUEST_SECONDS = Histogram(
    "switchboard_service_request_seconds",
    "Time to handle one request, by service, request kind and event",
    ["service", "kind", "event"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
REQUESTS = Counter(
    "switchboard_service_requests_total",
    "Requests handled, by service, kind, event and outcome (ok, refused, error)",
    ["service", "kind", "event", "outcome"],
)
BAD_ENVELOPES = Counter(
    "switchboard_service_bad_envelopes_total", "Undecodable requests dropped", ["service"]
)
EXPIRED = Counter(
    "switchboard_service_expired_requests_total",
    "Requests dropped unhandled because their gateway had given up on them (overload)",
    ["service"],
)

#: Seconds past a request's deadline before it is dropped: room for the clocks of different
#: hosts to disagree (keep them NTP-synchronised; a second is far more than NTP allows).
EXPIRY_GRACE = 1.0
#: Kinds dropped once expired. DISCONNECT and SYNC always run (they keep state right),
#: HEARTBEAT and DESCRIBE are cheap and say the gateway is alive.
_EXPIRABLE = frozenset({RequestKind.CONNECT, RequestKind.EVENT, RequestKind.FILTER})


@dataclass(frozen=True)
class RunnerConfig:
    """Where a service listens and how it judges its gateways."""

    bind: str
    broker_pub: str
    gateway_timeout: float = 5.0
    max_inflight: int = 1000
    ready_timeout: float = 10.0
    hwm: int = 100_000


class Runner:
    """Owns the sockets and the dispatch loop of one service instance."""

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
        router = plain_socket(context, zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.RCVHWM, config.hwm)
        router.setsockopt(zmq.SNDHWM, config.hwm)
        self.router = LoopSocket(router, self._accept)
        self.gateways: dict[str, float] = {}
        #: Each gateway's current process (instance id), and recently replaced ones.
        self.instances: dict[str, str] = {}
        self._retired: dict[str, tuple[str, ...]] = {}
        #: Gateways whose previous process's sockets are being dropped: their new
        #: instance's requests wait for it, so none is judged against the ghosts.
        self._replacing: dict[str, asyncio.Task[None]] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        routes = service.routes()
        self._known_events = {route.event for route in routes}
        self.ready = asyncio.Event()
        #: A stateful service (one with a SYNC route) answers nothing from a gateway whose
        #: sockets it does not know yet: such requests get ``resync`` and come back after
        #: that gateway's SYNC, so no request is judged against half-rebuilt state.
        self.stateful = any(route.kind == RequestKind.SYNC for route in routes)
        self.synced: set[str] = set()
        self._timers: dict[tuple[str, str, str], Any] = {}
        self._expired = EXPIRED.labels(service.name)
        self._counters: dict[tuple[str, str, str, str], Any] = {}

    async def run(self, stop: asyncio.Event) -> None:
        self.router.socket.bind(self.config.bind)
        try:
            if self.publisher is not None and not await self.publisher.wait_ready(
                self.config.ready_timeout
            ):
                log.warning("broker not reachable yet; publishing will start when it is")
            await self.service.start()
            self.ready.set()
            log.info("service %s ready on %s", self.service.name, self.config.bind)
            monitor = asyncio.create_task(self._monitor_gateways(stop))
            self.router.start()
            try:
                await stop.wait()
            finally:
                self.router.stop_reading()  # in-flight requests below still get replies
                monitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await monitor
                if self._inflight:
                    await asyncio.wait(self._inflight, timeout=5.0)
                await self.service.stop()
        finally:
            self.router.close()

    def _accept(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            BAD_ENVELOPES.labels(self.service.name).inc()
            return
        identity, body = frames
        try:
            request = Request.decode(body)
        except EnvelopeError as exc:
            BAD_ENVELOPES.labels(self.service.name).inc()
            log.warning("dropped undecodable request: %s", exc)
            return
        if request.instance and not self._current_instance(request.gateway, request.instance):
            return  # from a gateway process that has since been replaced: it is dead
        if request.gateway in self.gateways:
            # Any request is a sign of life: under overload a heartbeat waits in the same
            # queue as the data, and the gateway must not be declared lost meanwhile.
            self.gateways[request.gateway] = time.monotonic()
        if (request.kind in _EXPIRABLE and request.deadline
                and time.time() > request.deadline + EXPIRY_GRACE):
            # The gateway has already failed this request to its client: handling it now
            # would only add work to an overload (and side effects nobody was told about).
            self._expired.inc()
            return
        if len(self._inflight) >= self.config.max_inflight:
            # Over capacity: answer at once rather than queue without bound.
            reply: Reply | None = Reply(request.id, ok=False, error="service busy")
        else:
            reply = None
        task = asyncio.create_task(self._handle(identity, request, reply))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _reply(self, identity: bytes, reply: Reply) -> None:
        if self.router.socket.closed:
            return  # stopped meanwhile
        try:
            self.router.send_multipart((identity, reply.encode()))
        except zmq.ZMQError as exc:  # gateway gone or its queue full: nothing to answer
            log.debug("reply dropped: %s", exc)

    async def _handle(self, identity: bytes, request: Request, reply: Reply | None) -> None:
        replacing = self._replacing.get(request.gateway)
        if replacing is not None:
            await asyncio.shield(replacing)
        self._reply(identity, reply or await self.dispatch(request))

    def _current_instance(self, gateway: str, instance: str) -> bool:
        """Track gateway processes; False for a request from one already replaced.

        A gateway restarted under its old id (a supervisor restarts it with the same argv)
        is a new process: whatever its predecessor held — sockets, seats, presence — died
        with it, however soon the new one starts heartbeating. So the first request of a
        new instance drops the old instance's sockets at once, with the usual departures,
        instead of waiting for a timeout that the new process's heartbeats would prevent.
        """
        known = self.instances.get(gateway)
        if known == instance:
            return True
        retired = self._retired.get(gateway, ())
        if instance in retired:
            return False
        self.instances[gateway] = instance
        if known is None:
            return True
        self._retired[gateway] = (*retired[-3:], known)
        while len(self._retired) > 1000:  # bounded: gateway ids change with deployments
            del self._retired[next(iter(self._retired))]
        log.warning("gateway %s restarted (instance %s, was %s): dropping the old "
                    "instance's sockets", gateway, instance, known)
        self._forget_gateway(gateway)
        task = asyncio.create_task(self._gateway_lost(gateway))
        self._replacing[gateway] = task
        task.add_done_callback(
            lambda done: self._replacing.pop(gateway) if self._replacing.get(gateway) is done
            else None
        )
        return True

    def _forget_gateway(self, gateway_id: str) -> None:
        self.gateways.pop(gateway_id, None)
        self.service.gateways.pop(gateway_id, None)
        self.synced.discard(gateway_id)

    async def _gateway_lost(self, gateway_id: str) -> None:
        try:
            await self.service.gateway_lost(gateway_id)
        except Exception:
            log.exception("gateway_lost handler failed")

    async def dispatch(self, request: Request) -> Reply:
        """Handle one request: the single place where outcomes are timed, counted and mapped."""
        kind = request.kind
        if kind in (RequestKind.HEARTBEAT, RequestKind.DESCRIBE):
            if request.gateway:
                if request.gateway not in self.gateways:
                    log.info("gateway %s seen", request.gateway)
                self.gateways[request.gateway] = time.monotonic()
                if request.status is not None:
                    self.service.gateways[request.gateway] = request.status
            # A stateful service asks an unsynced gateway for its sockets at once, so even a
            # gateway whose clients are idle (no request to bounce) is re-registered.
            resync = self.stateful and request.gateway not in self.synced
            return Reply(request.id, info=self.service.info(), resync=resync)
        if self.stateful and request.gateway:
            if kind == RequestKind.SYNC:
                self.synced.add(request.gateway)
            elif request.gateway not in self.synced:
                return Reply(request.id, ok=False, error="service resyncing", resync=True)
        event = request.event if request.event in self._known_events else "other"
        labels = (self.service.name, kind.name.lower(), event)
        handler = self.service.handler_for(request)
        if handler is None:
            self._count(labels, "refused")
            if kind in (RequestKind.DISCONNECT, RequestKind.SYNC, RequestKind.UPDATE):
                return Reply(request.id)
            return Reply(request.id, ok=False, error=f"unknown event: {request.event}")
        start = time.perf_counter()
        outcome = "ok"
        try:
            reply = await handler(request)
            if reply is None:
                reply = Reply(request.id)
            elif not reply.ok:
                outcome = "refused"
        except ClientError as exc:
            outcome = "refused"
            reply = Reply(request.id, ok=False, error=exc.message)
        except Exception:
            outcome = "error"
            log.exception(
                "%s handler for %s %r failed", self.service.name, kind.name, request.event
            )
            reply = Reply(request.id, ok=False, error="internal error")
        elapsed = time.perf_counter() - start
        timer = self._timers.get(labels)
        if timer is None:  # label sets are bounded: known events, "other"
            timer = self._timers[labels] = REQUEST_SECONDS.labels(*labels)
        timer.observe(elapsed)
        self._count(labels, outcome)
        return reply

    def _count(self, labels: tuple[str, str, str], outcome: str) -> None:
        key = (*labels, outcome)
        counter = self._counters.get(key)
        if counter is None:  # a label lookup costs more than the increment: done once
            counter = self._counters[key] = REQUESTS.labels(*key)
        counter.inc()

    async def _monitor_gateways(self, stop: asyncio.Event) -> None:
        interval = max(self.config.gateway_timeout / 4, 0.05)
        while not stop.is_set():
            await asyncio.sleep(interval)
            if self.publisher is not None:
                self.publisher.drain_subscriptions()
            now = time.monotonic()
            for gateway_id, seen in list(self.gateways.items()):
                if now - seen > self.config.gateway_timeout:
                    self._forget_gateway(gateway_id)
                    # Its sockets are dropped now; a new instance later has nothing to drop,
                    # and the same instance (a partition that healed) is welcome back.
                    self.instances.pop(gateway_id, None)
                    log.warning(
                        "gateway %s lost (no heartbeat for %.1fs)", gateway_id, now - seen
                    )
                    await self._gateway_lost(gateway_id)


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


