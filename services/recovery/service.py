"""The recovery service: keeps what a dropped socket needs to come back, on any gateway.

It subscribes at the broker to every publication of the namespaces with recovery (their
namespace and room topics, and the per-socket topics under every gateway) and logs the
recoverable ones (:mod:`.state`). Gateways tell it of their recoverable sockets (ATTACH on
connect and on every change of rooms, SYNC after it restarts, DETACH when a connection
drops, DISCONNECT when a socket leaves for good); a gateway that a recovering client
reached takes the session (RECOVER), subscribes its rooms, then asks what it missed
(MISSED). The gateway it left, if alive, is told to forget it (a RELEASE publication).

It is not on the live path: killed, it loses only the sessions and the log (clients come
back with ``recovered: false``); gateways SYNC it when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq
from prometheus_client import Counter, Gauge

from switchboard.shared import topics
from switchboard.shared.envelope import (
    EnvelopeError,
    PubKind,
    Publication,
    Reply,
    Request,
    RequestKind,
    fail,
    reply_to,
)
from switchboard.shared.loopsocket import LoopSocket
from switchboard.shared.publisher import Publisher
from switchboard.shared.service import Service, on_disconnect, on_request, on_sync

from .config import Config
from .state import Attached, Missed, RecoveryState, Refusal, Taken

log = logging.getLogger("switchboard.recovery")

OUTCOMES = Counter("switchboard_recovery_attempts_total",
                   "Sessions asked for by recovering clients, by outcome", ["outcome"])
REPLAYED = Counter("switchboard_recovery_replayed_total",
                   "Packets handed to gateways for recovered sockets")
LOG_ENTRIES = Gauge("switchboard_recovery_log_entries", "Publications in the recovery log")
SESSIONS = Gauge("switchboard_recovery_sessions", "Recoverable sessions kept", ["state"])

Clock = Callable[[], float]
SWEEP_INTERVAL = 1.0


class RecoveryService(Service):
    name = "recovery"

    def __init__(self, publisher: Publisher, config: Config | None = None,
                 clock: Clock = time.time) -> None:
        super().__init__(publisher)
        self.config = config or Config()
        self.clock = clock
        self.state = RecoveryState(frozenset(self.config.recovery_namespaces),
                                   self.config.recovery_window,
                                   self.config.recovery_max_entries,
                                   self.config.recovery_max_sessions)
        self._sub: LoopSocket | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle: the SUB socket ---------------------------------------------------------
    def prefixes(self) -> list[bytes]:
        """What it subscribes: the recovery namespaces' own and room topics, and every
        socket's (they sit under their gateways' topics)."""
        out = [topics.GATEWAY]
        for ns in sorted(self.state.namespaces):
            out += [topics.namespace(ns), topics.rooms_of(ns)]
        return out

    async def start(self) -> None:
        if not self.state.namespaces:
            log.warning("no --recovery-namespaces: nothing will be recoverable")
            return
        sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 1_000_000)
        for prefix in self.prefixes():
            sock.setsockopt(zmq.SUBSCRIBE, prefix)
        # One socket connected to every broker: ZeroMQ sends each subscription to all of
        # them, and the prefixes here span topics that live on any broker.
        for endpoint in self.config.broker_sub:
            sock.connect(endpoint)
        self._sub = LoopSocket(sock, self._on_message)
        self._sub.start()
        self._sweeper = asyncio.create_task(self._sweep())
        log.info("recovery for %s, window %.0fs", ", ".join(sorted(self.state.namespaces)),
                 self.state.window)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._sub is not None:
            self._sub.close()

    def _on_message(self, frames: list[bytes]) -> None:
        if len(frames) != 2 or frames[1] == topics.SUBSCRIBED_MARKER:
            return
        try:
            pub = Publication.decode(frames[1])
        except EnvelopeError:
            return
        if pub.kind in (PubKind.EMIT, PubKind.DISCONNECT, PubKind.CLOSE):
            self.state.publication(pub, self.clock())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.state.expire(self.clock())
            stats = self.state.stats()
            LOG_ENTRIES.set(stats["logEntries"])
            SESSIONS.labels("attached").set(stats["attached"])
            SESSIONS.labels("detached").set(stats["detached"])

    # -- requests from gateways ------------------------------------------------------------
    @on_request(RequestKind.RECOVER)
    async def recover(self, request: Request) -> Reply:
        """``args`` [pid, offset, force]: the session's state, now the requesting gateway's;
        ``attached`` with ``args`` [gateway, sid] when it may still be connected there."""
        pid = _text(request.args, 0)
        force = len(request.args) > 2 and request.args[2] is True
        taken = (self.state.take(pid, request.gateway, self.clock(), _text(request.args, 1),
                                 force) if pid else Refusal.UNKNOWN)
        if isinstance(taken, Attached):
            return Reply(request.id, ok=False, error="attached",
                         args=[taken.gateway, taken.sid])
        if not isinstance(taken, Taken):
            OUTCOMES.labels(taken.value).inc()
            return fail(request, taken.value)
        session = taken.state.session
        if taken.previous:
            self.publisher.publish(
                topics.socket(session.sid),
                Publication(PubKind.RELEASE, session.ns, args=[request.gateway],
                            sids=(session.sid,), source=self.name))
        return reply_to(request, session=session, joins=taken.state.rooms)

    @on_request(RequestKind.MISSED)
    async def missed(self, request: Request) -> Reply:
        """``args`` [pid, offset]: ``[[offset, event, args]…, floor]`` of what it missed."""
        if self._sub is not None:
            # The gateway asks once its subscriptions are in force at the broker: whatever
            # the broker passed before is on its way here too; take it in first.
            self._sub.drain()
        found = self.state.missed(_text(request.args, 0), _text(request.args, 1))
        if not isinstance(found, Missed):
            OUTCOMES.labels(found.value).inc()
            return fail(request, found.value)
        OUTCOMES.labels("recovered").inc()
        REPLAYED.inc(len(found.entries))
        packets = [[key, pub.event, pub.args] for key, pub in found.entries]
        return reply_to(request, args=[packets, found.floor])

    @on_request(RequestKind.ATTACH)
    async def attach(self, request: Request) -> None:
        for state in request.sockets:
            self.state.attach(state, request.gateway, self.clock())

    @on_request(RequestKind.DETACH)
    async def detach(self, request: Request) -> None:
        if request.session is not None:
            self.state.detach(request.session.sid, request.gateway, self.clock())

    @on_disconnect("*")
    async def disconnect(self, request: Request) -> None:
        if request.session is not None:
            self.state.discard(request.session.sid, request.gateway)

    @on_sync()
    async def sync(self, request: Request) -> None:
        self.state.synced(request.gateway, request.sockets, self.clock())

    async def gateway_lost(self, gateway_id: str) -> None:
        self.state.gateway_lost(gateway_id, self.clock())


def _text(args: list[Any], index: int) -> str:
    value = args[index] if len(args) > index else ""
    return value if isinstance(value, str) else ""
