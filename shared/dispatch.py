"""The seam every request of every service passes: admission, dispatch, timing, metrics,
logging and error mapping, once. No sockets here (:mod:`switchboard.shared.runner` adds
them; :mod:`switchboard.shared.testing` calls this directly in tests).

What it decides about a request before a handler sees it:

- **Which gateway process sent it.** Requests carry the gateway's instance id (random per
  start). A new instance under a known gateway id is a restarted process: the old one's
  sockets are dropped at once (``Service.gateway_lost``), and requests of a replaced
  instance are not served. Any request counts as its gateway's sign of life.
- **Whether it is still wanted.** A CONNECT/EVENT/FILTER that arrives more than a second
  past its gateway's deadline was already failed to its client: it is dropped unhandled.
- **Whether the service may judge it.** A stateful service (one with a SYNC route) answers
  ``resync`` to a gateway whose sockets it does not know yet; the gateway sends SYNC, then
  the request again, so nothing is judged against half-rebuilt state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from prometheus_client import Counter, Histogram

from switchboard.shared.envelope import ReplayBatch, Reply, Request, RequestKind
from switchboard.shared.errors import ClientError, ServiceUnavailable
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
REPLAYS = Counter(
    "switchboard_service_replays_total",
    "REPLAY requests answered (publications a gateway missed), by service and outcome "
    "(complete, partial: some were forgotten, other: asked of another publisher process)",
    ["service", "outcome"],
)
EXPIRED = Counter(
    "switchboard_service_expired_requests_total",
    "Requests dropped unhandled because their gateway had given up on them (overload)",
    ["service"],
)

#: Seconds past a request's deadline before it is dropped: room for the clocks of different
#: hosts to disagree (keep them NTP-synchronised; a second is far more than NTP allows).
EXPIRY_GRACE = 1.0
#: Kinds dropped once expired. DISCONNECT, SYNC and UPDATE always run (they keep state
#: right), HEARTBEAT and DESCRIBE are cheap and say the gateway is alive.
_EXPIRABLE = frozenset({RequestKind.CONNECT, RequestKind.EVENT, RequestKind.FILTER})
#: Kinds a service may leave unhandled without it being an error.
_OPTIONAL = frozenset({RequestKind.DISCONNECT, RequestKind.SYNC, RequestKind.UPDATE})


class Dispatcher:
    """Admits requests for one service and calls its handlers (see the module docstring)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        #: Live gateways: id → when last heard of (monotonic).
        self.gateways: dict[str, float] = {}
        #: Each gateway's current process (instance id), and recently replaced ones.
        self.instances: dict[str, str] = {}
        self._retired: dict[str, tuple[str, ...]] = {}
        #: Gateways whose previous process's sockets are being dropped: their new
        #: instance's requests wait for it, so none is judged against the ghosts.
        self._replacing: dict[str, asyncio.Task[None]] = {}
        routes = service.routes()
        self._known_events = {route.event for route in routes}
        self.stateful = any(route.kind == RequestKind.SYNC for route in routes)
        self.synced: set[str] = set()
        #: The service's generation the SYNCs in :attr:`synced` were given to.
        self._generation = service.generation
        self._timers: dict[tuple[str, str, str], Any] = {}
        self._expired = EXPIRED.labels(service.name)
        self._counters: dict[tuple[str, str, str, str], Any] = {}

    # -- admission -------------------------------------------------------------------------
    def admit(self, request: Request) -> bool:
        """Whether ``request`` is to be handled at all (False: drop it unanswered)."""
        if request.instance and not self._current_instance(request.gateway, request.instance):
            return False  # from a gateway process that has since been replaced: it is dead
        if request.gateway in self.gateways:
            # Any request is a sign of life: under overload a heartbeat waits in the same
            # queue as the data, and the gateway must not be declared lost meanwhile.
            self.gateways[request.gateway] = time.monotonic()
        if (request.kind in _EXPIRABLE and request.deadline
                and time.time() > request.deadline + EXPIRY_GRACE):
            # The gateway has already failed this request to its client: handling it now
            # would only add work to an overload (and side effects nobody was told about).
            self._expired.inc()
            return False
        return True

    async def handle(self, request: Request) -> Reply:
        """An admitted request's reply (after its gateway's predecessor is dropped)."""
        replacing = self._replacing.get(request.gateway)
        if replacing is not None:
            await asyncio.shield(replacing)
        return await self.dispatch(request)

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

    # -- lost gateways ---------------------------------------------------------------------
    async def expire_gateways(self, timeout: float) -> None:
        """Drop the sockets of every gateway not heard of for ``timeout`` seconds."""
        now = time.monotonic()
        for gateway_id, seen in list(self.gateways.items()):
            if now - seen > timeout:
                self._forget_gateway(gateway_id)
                # Its sockets are dropped now; a new instance later has nothing to drop,
                # and the same instance (a partition that healed) is welcome back.
                self.instances.pop(gateway_id, None)
                log.warning("gateway %s lost (no heartbeat for %.1fs)", gateway_id, now - seen)
                await self._gateway_lost(gateway_id)

    def _forget_gateway(self, gateway_id: str) -> None:
        self.gateways.pop(gateway_id, None)
        self.service.gateways.pop(gateway_id, None)
        self.synced.discard(gateway_id)

    async def _gateway_lost(self, gateway_id: str) -> None:
        try:
            await self.service.gateway_lost(gateway_id)
        except Exception:
            log.exception("gateway_lost handler failed")

    # -- dispatch --------------------------------------------------------------------------
    async def dispatch(self, request: Request) -> Reply:
        """Handle one request: the single place where outcomes are timed, counted and mapped."""
        kind = request.kind
        if self._generation != self.service.generation:
            # The service dropped what the gateways' SYNCs gave it: ask each again.
            self._generation = self.service.generation
            self.synced.clear()
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
        if kind == RequestKind.REPLAY:
            return self._replay(request)
        if self.stateful and request.gateway:
            if kind == RequestKind.SYNC:
                self.synced.add(request.gateway)
            elif request.gateway not in self.synced:
                # The flag is what the gateway acts on (it SYNCs, then asks again); the
                # text is what a client sees if the retry meets a resync too.
                return Reply(request.id, ok=False, error=ServiceUnavailable.client_message,
                             resync=True)
        event = request.event if request.event in self._known_events else "other"
        labels = (self.service.name, kind.name.lower(), event)
        found = self.service.handling(request)
        if found is None:
            self._count(labels, "refused")
            if kind in _OPTIONAL:
                return Reply(request.id)
            return Reply(request.id, ok=False, error=f"unknown event: {request.event}")
        start = time.perf_counter()
        outcome = "ok"
        try:
            handler, schema, key = found
            reply = await handler(self.service.prepared(request, schema, key))
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

    def _replay(self, request: Request) -> Reply:
        """What this process published after ``args`` [origin, seq] (docs/delivery.md)."""
        journals = self.service.publisher.journals
        if not journals:
            return Reply(request.id, ok=False, error="no journal")
        args = request.args
        if (len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], int)
                or isinstance(args[1], bool)):
            return Reply(request.id, ok=False, error="REPLAY takes [origin, seq]")
        origin, after = args
        journal = self.service.publisher.journal_of(origin)
        if journal is None:  # a predecessor's: gone with it
            REPLAYS.labels(self.service.name, "other").inc()
            now = journals[0]
            return Reply(request.id, ok=False, error="another publisher",
                         replay=ReplayBatch(now.origin, now.epoch, now.seq, False))
        batch = journal.replay(after)
        REPLAYS.labels(self.service.name, "complete" if batch.complete else "partial").inc()
        if not batch.complete:
            log.warning("replay for %s after %d: some were already forgotten",
                        request.gateway, after)
        return Reply(request.id, replay=batch)

    def _count(self, labels: tuple[str, str, str], outcome: str) -> None:
        key = (*labels, outcome)
        counter = self._counters.get(key)
        if counter is None:  # a label lookup costs more than the increment: done once
            counter = self._counters[key] = REQUESTS.labels(*key)
        counter.inc()
