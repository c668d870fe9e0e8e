"""The gateway's side of request/reply: one DEALER per service, replies matched by id.

Every request has a deadline; a missing or late reply becomes :class:`ServiceUnavailable`
(the client sees a failed ack ``service unavailable``), never a hung socket. Heartbeats keep
a liveness counter per service and notice restarts (a new ``instance``), after which the
gateway re-describes the service and re-sends its sockets (SYNC).

Sockets use ``IMMEDIATE`` so that requests are not queued for a service that is down (they
fail at once instead of flooding it with stale work when it comes back). Every DEALER has
the same routing id (:func:`~switchboard.shared.envelope.gateway_identity`): an event's
owner answers a request another service passed on to it straight to this gateway.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import zmq
import zmq.asyncio

from switchboard.gateway import metrics as m
from switchboard.gateway.routing import RoutingTable
from switchboard.shared.envelope import (
    GatewayStatus,
    ReplayBatch,
    Reply,
    Request,
    RequestKind,
    ServiceInfo,
    gateway_identity,
)
from switchboard.shared.errors import EnvelopeError, ServiceUnavailable
from switchboard.shared.loopsocket import LoopSocket, SocketMonitor, watched_dealer

log = logging.getLogger("switchboard.gateway.backbone")


def _expire(future: asyncio.Future[Reply]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


#: After a service's connection drops, how long its requests still wait for a reply before
#: they fail: one it passed on before it died is answered by the next service meanwhile.
LOST_GRACE = 1.0
#: Bounds of a replay: one request, and the tries.
REPLAY_TIMEOUT = 5.0
REPLAY_TRIES = 3
#: Bound of the description a resync asks for first (it goes on without it).
DESCRIBE_TIMEOUT = 1.0


class _Lost(Exception):
    """The service a request went to lost its connection before answering."""


class _NotSent(Exception):
    """The request could not be queued to its service (not connected, or its queue full)."""


class Backbone:
    def __init__(
        self,
        gateway_id: str,
        endpoints: dict[str, list[str]],
        context: zmq.asyncio.Context,
        request_timeout: float,
        status: Callable[[], GatewayStatus],
        on_restart: Callable[[str], Coroutine[Any, Any, None]],
        hwm: int = 100_000,
        liveness: int = 3,
        instance: str = "",
    ) -> None:
        self.liveness = liveness
        self.gateway_id = gateway_id
        #: This process's instance id, sent with every request (see ``Request.instance``).
        self.instance = instance
        self.endpoints = endpoints
        self.context = context
        self.request_timeout = request_timeout
        self.status = status
        self.on_restart = on_restart
        self.routing = RoutingTable()
        self.instances: dict[str, str] = {}
        self.missed: dict[str, int] = dict.fromkeys(endpoints, 0)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        #: Which services each pending request goes through (the one asked, then its
        #: route) and when it went: to fail those a dead service took.
        self._sent: dict[int, tuple[tuple[str, ...], float]] = {}
        self._dealers: dict[str, LoopSocket] = {}
        self._monitors: list[SocketMonitor] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._syncing: dict[str, asyncio.Future[None]] = {}
        self._latency = {
            (name, kind): m.REQUEST_SECONDS.labels(name, kind.name.lower())
            for name in endpoints for kind in RequestKind
        }
        #: Outcomes of recent client-driven requests (True = failed), for /health.
        self._recent: collections.deque[bool] = collections.deque(maxlen=200)
        for name, addresses in endpoints.items():
            # A request that reached a service which then died (kill -9, a freeze past the
            # ZeroMQ heartbeat) will never be answered: fail it soon after the drop rather
            # than at its timeout, which would also hold up its socket's later replies.
            dealer, monitor = watched_dealer(
                context, addresses, hwm, zmq.EVENT_DISCONNECTED,
                functools.partial(self._on_monitor, name), gateway_identity(gateway_id, instance))
            self._dealers[name] = LoopSocket(dealer, functools.partial(self._on_reply, name),
                                             send_failed=self._not_sent)
            self._monitors.append(monitor)

    def start(self) -> None:
        for dealer in self._dealers.values():
            dealer.start()
        for monitor in self._monitors:
            monitor.start()

    def _on_monitor(self, service: str, event: int) -> None:
        if event == zmq.EVENT_DISCONNECTED:
            loop = asyncio.get_running_loop()
            loop.call_later(LOST_GRACE, self._fail_lost, service, loop.time())

    def _fail_lost(self, service: str, before: float) -> None:
        for request_id, (path, at) in list(self._sent.items()):
            if service in path and at < before:
                future = self._pending.get(request_id)
                if future is not None and not future.done():
                    future.set_exception(_Lost(service))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ServiceUnavailable("gateway closing"))
        for monitor in self._monitors:
            monitor.close()
        for dealer in self._dealers.values():
            dealer.close()

    def recent_outcomes(self) -> tuple[int, int]:
        """(failed, total) over the last requests other than heartbeats."""
        return sum(self._recent), len(self._recent)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def is_up(self, service: str) -> bool:
        return service in self.instances and self.missed.get(service, 0) < self.liveness

    async def request(
        self,
        service: str,
        kind: RequestKind,
        timeout: float | None = None,
        sent: asyncio.Future[None] | None = None,
        **fields: Any,
    ) -> Reply:
        """Send one request and await its reply; raises ServiceUnavailable on any failure.

        ``sent`` (optional) is resolved as soon as the request is on its way (or failed to
        go): callers that keep an order between requests wait for that, not for the reply.
        A stateful service that has not had our SYNC yet answers ``resync``: send it (once
        for all requests waiting on it), then the request again (along its whole ``route``:
        the one that asked may be further along it, ``reply.service``).
        """
        try:
            reply = await self._request(service, kind, timeout, sent, **fields)
        finally:
            if sent is not None and not sent.done():
                sent.set_result(None)
        if reply.resync and kind != RequestKind.SYNC:
            await self.resync(reply.service or service)
            reply = await self._request(service, kind, timeout, None, **fields)
        return reply

    async def replay(self, source: str, origin: str, after: int) -> ReplayBatch | None:
        """What ``source`` published as ``origin`` after #``after`` (docs/delivery.md): a few
        tries; None, logged, when it could not be had."""
        batch = None
        for attempt in range(REPLAY_TRIES):
            try:
                reply = await self.request(source, RequestKind.REPLAY, timeout=REPLAY_TIMEOUT,
                                           args=[origin, after])
            except ServiceUnavailable as exc:
                log.warning("replay from %s failed (try %d): %s", source, attempt + 1, exc)
                continue
            batch = reply.replay
            if batch is not None:
                break
        if batch is None:
            log.error("publications of %s after #%d could not be replayed: some may be lost",
                      source, after)
        elif not batch.complete or batch.origin != origin:
            log.error("replay from %s incomplete (restarted, or beyond its journal): some "
                      "publications after #%d may be lost", source, after)
        return batch

    async def resync(self, service: str) -> None:
        running = self._syncing.get(service)
        if running is None or running.done():
            running = asyncio.ensure_future(self._described_then_synced(service))
            self._syncing[service] = running
        await asyncio.shield(running)

    async def _described_then_synced(self, service: str) -> None:
        """Its description first (one heartbeat), then the SYNC: an instance that asks for
        its sockets again because it rejoined its group is routed to as a member (told of
        departures) from before the snapshot it is sent, not only from its next beat."""
        try:
            # Not heartbeat(): its request() would wait for this very resync.
            reply = await self._request(service, RequestKind.HEARTBEAT, DESCRIBE_TIMEOUT, None,
                                        status=self.status())
        except ServiceUnavailable:
            pass  # synced anyway; its next beat describes it
        else:
            if reply.info is not None:
                self._learn(service, reply.info)
        await self.on_restart(service)

    async def _request(
        self,
        service: str,
        kind: RequestKind,
        timeout: float | None,
        sent: asyncio.Future[None] | None,
        **fields: Any,
    ) -> Reply:
        dealer = self._dealers.get(service)
        if dealer is None:
            raise ServiceUnavailable(f"no endpoint configured for service {service!r}")
        timeout = self.request_timeout if timeout is None else timeout
        request_id = next(self._ids)
        request = Request(
            kind=kind, id=request_id, gateway=self.gateway_id,
            deadline=time.time() + timeout, instance=self.instance, **fields,
        )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._pending[request_id] = future
        started = loop.time()
        self._sent[request_id] = ((service, *fields.get("route", ())), started)
        failed = True
        try:
            # With the others of this loop iteration, in their order (shared.loopsocket).
            dealer.send_soon(request.encode(), tag=request_id)
            if sent is not None:
                sent.set_result(None)
            # A timer handle rather than asyncio.wait_for: no extra task or future per request.
            timer = loop.call_later(timeout, _expire, future)
            try:
                reply = await future
            except TimeoutError:
                m.REQUEST_FAILURES.labels(service, "timeout").inc()
                raise ServiceUnavailable(f"service {service} did not answer in time") from None
            except _Lost as lost:
                m.REQUEST_FAILURES.labels(service, "lost").inc()
                raise ServiceUnavailable(f"service {lost.args[0]} went away") from None
            except _NotSent:
                m.REQUEST_FAILURES.labels(service, "not connected").inc()
                raise ServiceUnavailable(f"service {service} is not connected") from None
            finally:
                timer.cancel()
            failed = False
            route = fields.get("route")
            if route and kind == RequestKind.FILTER and reply.service == route[-1]:
                # A routed event answered by its owner: counted as the owner's EVENT (the
                # filters' time inside it). A routed CONNECT counts as its first stage's.
                key = (reply.service, RequestKind.EVENT)
            else:
                key = (service, kind)
            histogram = self._latency.get(key)
            if histogram is not None:
                histogram.observe(loop.time() - started)
            return reply
        finally:
            self._pending.pop(request_id, None)
            self._sent.pop(request_id, None)
            if kind != RequestKind.HEARTBEAT:
                self._recent.append(failed)

    def _not_sent(self, peer: bytes, request_ids: list[Any], exc: zmq.ZMQError) -> None:
        for request_id in request_ids:
            future = self._pending.get(request_id)
            if future is not None and not future.done():
                future.set_exception(_NotSent(str(exc)))

    def _on_reply(self, name: str, frames: list[bytes]) -> None:
        """A batch of replies: every frame is one (shared.loopsocket)."""
        pending = self._pending
        for body in frames:
            try:
                reply = Reply.decode(body)
            except EnvelopeError as exc:
                log.warning("undecodable reply from %s dropped: %s", name, exc)
                continue
            future = pending.get(reply.id)
            if future is not None and not future.done():
                future.set_result(reply)

    async def heartbeat(self, service: str, timeout: float) -> bool:
        """One heartbeat round trip; updates routing on first contact or restart."""
        try:
            reply = await self.request(
                service, RequestKind.HEARTBEAT, timeout=timeout, status=self.status()
            )
        except ServiceUnavailable:
            self.missed[service] = self.missed.get(service, 0) + 1
            if self.missed[service] == self.liveness:
                log.warning("service %s unreachable (%d heartbeats missed)", service,
                            self.liveness)
            return False
        if self.missed.get(service, 0) >= self.liveness:
            log.info("service %s reachable again", service)
        self.missed[service] = 0
        info = reply.info
        if info is not None:
            self._learn(service, info)
        if reply.resync and not self._resync_running(service):
            self._tasks.append(asyncio.create_task(self.resync(service)))
        return True

    def _resync_running(self, service: str) -> bool:
        running = self._syncing.get(service)
        return running is not None and not running.done()

    def _learn(self, service: str, info: ServiceInfo) -> None:
        previous = self.instances.get(service)
        if previous == info.instance:
            known = self.routing.infos.get(service)
            if known is not None and (known.epoch, known.members) != (info.epoch, info.members):
                # The same process, with new members (an instance joined, or one's lease
                # lapsed and its keys went to the others): route by them from now on.
                log.warning("service %s: instances of %s now %s (epoch %d)", service,
                            info.group, ", ".join(info.members) or "none", info.epoch)
                self.routing.update(info)
            return
        self.instances[service] = info.instance
        self.routing.update(info)
        unknown = [name for name in info.members if name not in self.endpoints]
        if unknown:
            # Keys owned by those instances would fail: say why, once per description.
            log.error("service %s names instances of %s that --services lacks: %s; their "
                      "share of requests fails", service, info.group, ", ".join(unknown))
        if previous is None:
            log.info("service %s described (%d routes)", service, len(info.routes))
        else:
            log.warning("service %s restarted (instance %s); resyncing", service, info.instance)
            self._tasks.append(asyncio.create_task(self.resync(service)))

    async def wait_described(self, timeout: float) -> bool:
        """Readiness handshake: heartbeat every service until all answered (bounded). A
        spare instance (configured, not a live member by its group's answer) is not waited
        for: it may never start, and the members serve its share."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            missing = [name for name in self._dealers
                       if name not in self.instances and not self.routing.spare(name)]
            if not missing:
                return True
            left = deadline - loop.time()
            if left <= 0:
                log.warning("services not reachable at start: %s", ", ".join(missing))
                return False
            await asyncio.gather(*(self.heartbeat(name, min(0.5, left)) for name in missing))
            if any(name not in self.instances for name in missing):
                await asyncio.sleep(0.05)  # a DEALER with IMMEDIATE fails fast until connected

    async def heartbeat_loop(self, interval: float) -> None:
        while True:
            await asyncio.gather(*(self.heartbeat(name, interval) for name in self._dealers))
            await asyncio.sleep(interval)
