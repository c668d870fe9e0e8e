"""Connection state recovery at the gateway: the recovery service's client (Socket.IO 4.6).

The state of a recoverable socket lives in the recovery service, not here (docs/recovery.md):
this gateway tells it of every recoverable socket (ATTACH) and of a dropped connection
(DETACH), takes a session for a recovering client (RECOVER) and fetches what it missed
(MISSED). A recoverable socket whose connection dropped leaves the services only after
``grace`` seconds, so a client that comes back sooner — here or on another gateway — never
looked offline to anyone.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter

from switchboard.gateway.client import NsSocket
from switchboard.shared.envelope import Reply, RequestKind, Session, SocketState
from switchboard.shared.errors import ServiceUnavailable

log = logging.getLogger("switchboard.gateway")

ATTEMPTS = Counter("switchboard_gateway_recoveries_total",
                   "Recovering CONNECTs (auth with a pid), by outcome", ["outcome"])
REPLAYED = Counter("switchboard_gateway_recovery_replayed_total",
                   "Missed packets written to recovered sockets")
#: The recovery service answers from memory: a slow answer means it is gone.
REQUEST_TIMEOUT = 2.0


class Services(Protocol):
    async def request(self, service: str, kind: RequestKind, timeout: float | None = None,
                      sent: asyncio.Future[None] | None = None, **fields: Any) -> Reply: ...


@dataclass(frozen=True)
class RecoverySettings:
    namespaces: frozenset[str] = frozenset()
    skip_middlewares: bool = True
    grace: float = 5.0


@dataclass(frozen=True, slots=True)
class MissedPackets:
    #: ``[offset, event, args]`` in order.
    packets: list[list[Any]]
    #: Publisher origin → its last seq the recovery service had logged.
    floor: dict[str, int]


Spawn = Callable[[Coroutine[Any, Any, None]], None]
#: Whether gateway ``gateway`` has namespace socket ``sid`` connected (True), not (False),
#: or cannot say (None: gone, unknown, no answer).
Holds = Callable[[str, str], Coroutine[Any, Any, bool | None]]


class Recovery:
    def __init__(self, settings: RecoverySettings, services: Services, spawn: Spawn,
                 service_name: Callable[[], str | None], holds: Holds | None = None) -> None:
        self.settings = settings
        self.holds = holds
        self.namespaces = settings.namespaces
        self.services = services
        self.spawn = spawn
        self._service_name = service_name
        #: Departures waiting out the grace, by socket id.
        self.deferred: dict[str, asyncio.TimerHandle] = {}
        #: Sockets whose rooms changed in this loop iteration (one ATTACH each).
        self._changed: dict[str, NsSocket] = {}

    @property
    def service(self) -> str | None:
        return self._service_name()

    def applies(self, ns: str, eio: int) -> bool:
        """Engine.IO v3 clients (socket.io-client 2) know nothing of recovery."""
        return ns in self.namespaces and eio == 4

    @staticmethod
    def new_pid() -> str:
        return secrets.token_urlsafe(16)

    # -- recovering ------------------------------------------------------------------------
    async def take(self, pid: str, offset: str) -> Reply | None:
        """The session of ``pid``, now ours; None if it cannot be recovered."""
        ATTEMPTS.labels("attempted").inc()
        reply = await self._ask(RequestKind.RECOVER, args=[pid, offset])
        if reply is not None and reply.error == "attached" and reply.args \
                and len(reply.args) == 2:
            # Attached on another gateway: restored only if its socket is gone there (a
            # crashed gateway cannot say so; its peer link fails at once).
            gateway, sid = str(reply.args[0]), str(reply.args[1])
            connected = await self.holds(gateway, sid) if self.holds is not None else None
            if connected:
                ATTEMPTS.labels("connected").inc()
                log.info("recovery of %s refused: still connected on %s", sid, gateway)
                return None
            reply = await self._ask(RequestKind.RECOVER, args=[pid, offset, True])
        if reply is None or not reply.ok or reply.session is None:
            outcome = reply.error if reply is not None and reply.error else "failed"
            outcome = outcome if outcome in ("unknown", "expired", "offset") else "failed"
            ATTEMPTS.labels(outcome).inc()
            log.info("recovery refused (%s): a new socket", outcome)
            return None
        return reply

    async def missed(self, pid: str, offset: str) -> MissedPackets | None:
        reply = await self._ask(RequestKind.MISSED, args=[pid, offset])
        if reply is None or not reply.ok or not reply.args or len(reply.args) != 2:
            ATTEMPTS.labels("failed").inc()
            return None
        packets, floor = reply.args
        if not isinstance(packets, list) or not isinstance(floor, dict):
            ATTEMPTS.labels("failed").inc()
            return None
        ATTEMPTS.labels("recovered").inc()
        REPLAYED.inc(len(packets))
        return MissedPackets(packets, floor)

    async def _ask(self, kind: RequestKind, **fields: Any) -> Reply | None:
        service = self.service
        if service is None:
            return None
        try:
            return await self.services.request(service, kind, timeout=REQUEST_TIMEOUT, **fields)
        except ServiceUnavailable as exc:
            log.warning("%s at the recovery service failed: %s", kind.name, exc)
            return None

    # -- what the recovery service hears ---------------------------------------------------
    def attach(self, sock: NsSocket) -> None:
        """A recoverable socket is here, with these rooms (on connect and every change)."""
        state = SocketState(sock.session, tuple(sorted(sock.rooms)), sock.pid)
        self._tell(RequestKind.ATTACH, sockets=(state,))

    # fanout.RoomObserver: a live socket's rooms changed
    def room_joined(self, sock: NsSocket, room: str) -> None:
        self._rooms_changed(sock)

    def room_left(self, sock: NsSocket, room: str) -> None:
        self._rooms_changed(sock)

    def _rooms_changed(self, sock: NsSocket) -> None:
        if not sock.pid:
            return
        if not self._changed:
            asyncio.get_running_loop().call_soon(self._report_changes)
        self._changed[sock.sid] = sock

    def _report_changes(self) -> None:
        changed, self._changed = self._changed, {}
        for sock in changed.values():
            if sock.client.sockets.get(sock.ns) is sock:
                self.attach(sock)

    def detach(self, sock: NsSocket, depart: Callable[[], None]) -> None:
        """Its connection dropped: the recovery window starts; ``depart`` (tell the other
        services it left) runs after the grace unless it comes back first."""
        self._tell(RequestKind.DETACH, session=sock.session)
        loop = asyncio.get_running_loop()
        sid = sock.sid

        def due() -> None:
            if self.deferred.pop(sid, None) is not None:
                depart()

        self.cancel(sid)
        self.deferred[sid] = loop.call_later(self.settings.grace, due)

    def detach_only(self, session: Session) -> None:
        """A restore that failed for want of a service: recoverable still, nobody told."""
        self._tell(RequestKind.DETACH, session=session)

    def cancel(self, sid: str) -> bool:
        """The socket came back (or moved on): its departure is not told."""
        handle = self.deferred.pop(sid, None)
        if handle is None:
            return False
        handle.cancel()
        return True

    def forget(self, session: Session) -> None:
        """The socket left for good: nothing to recover."""
        self._tell(RequestKind.DISCONNECT, session=session)

    def _tell(self, kind: RequestKind, **fields: Any) -> None:
        service = self.service
        if service is not None:
            self.spawn(self._send(service, kind, fields))

    async def _send(self, service: str, kind: RequestKind, fields: dict[str, Any]) -> None:
        try:
            await self.services.request(service, kind, timeout=REQUEST_TIMEOUT, **fields)
        except ServiceUnavailable as exc:
            log.debug("%s to the recovery service not delivered: %s", kind.name, exc)
