"""Sockets leaving (:class:`Departures`): taken out of their connection and the local index,
and every service that listens for departures told, once; a socket with recovery that only
lost its connection waits out its grace first. Also the services' other one-way news of a
socket (a new transport), and whether a socket is still here (recovery asks)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from switchboard.gateway import metrics as m
from switchboard.gateway.adminui import AdminUi
from switchboard.gateway.admission import Admission
from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.index import LocalIndex
from switchboard.gateway.needs import Judge, Services, Spawn
from switchboard.gateway.recovery import Recovery
from switchboard.shared.envelope import Publication, RequestKind, Session
from switchboard.shared.errors import ServiceUnavailable

log = logging.getLogger("switchboard.gateway")


class Departures:
    def __init__(self, gateway_id: str, services: Services, index: LocalIndex, spawn: Spawn,
                 admission: Admission, policy: Judge | None = None,
                 recovery: Recovery | None = None, admin: AdminUi | None = None) -> None:
        self.gateway_id = gateway_id
        self.services = services
        self.index = index
        self.spawn = spawn
        self.admission = admission
        self.policy = policy
        self.recovery = recovery
        self.admin = admin

    def drop_socket(self, sock: NsSocket, reason: str = "", recoverable: bool = False) -> None:
        """``reason``: Socket.IO's disconnect reason, for the Admin UI (guessed if empty);
        ``recoverable``: the connection dropped (it did not leave): a socket with recovery
        may come back within the window, so its departure waits out the grace."""
        if not reason:
            reason = ("transport close" if sock.client.conn.closed
                      else "server namespace disconnect")
        if not self.take_out(sock, reason):
            return
        if self.admin is not None and sock.ns == self.admin.namespace:
            return  # no service knows of it
        log.info("socket %s left %s (user %s) after %.1fs", sock.sid, sock.ns,
                 sock.session.user_id or "-", time.time() - sock.session.connected_at)
        recovery, session = self.recovery, sock.session
        if sock.pid and recovery is not None and recoverable:
            listeners = self.listeners(sock.ns)
            recovery.detach(sock, lambda: self.notify(session, listeners))
            return
        if sock.pid and recovery is not None:
            recovery.forget(session)
        self.notify(session, self.listeners(sock.ns))

    def drop_all(self, client: Client, recoverable: bool = False) -> None:
        for sock in list(client.sockets.values()):
            self.drop_socket(sock, recoverable=recoverable)

    def take_out(self, sock: NsSocket, reason: str) -> bool:
        """The socket out of its connection and the index (False: it was out already)."""
        if not sock.client.remove_socket(sock):
            return False
        self.index.remove(sock)
        if self.policy is not None:
            self.policy.forget(sock.sid)
        m.SOCKETS.labels(sock.ns).dec()
        if self.admin is not None and sock.live:
            self.admin.socket_disconnected(sock, reason)
        return True

    def listeners(self, ns: str) -> list[str]:
        """Who hears of a departure, but the recovery service (told by ``recovery``)."""
        routing = self.services.routing
        return [name for name in routing.disconnect_listeners(ns) if name != routing.recovery]

    def notify(self, session: Session, services: Iterable[str]) -> None:
        """Tell ``services`` that the socket of ``session`` is gone."""
        self.tell_all(session, RequestKind.DISCONNECT, services)

    def tell_all(self, session: Session, kind: RequestKind, services: Iterable[str],
                 **fields: Any) -> None:
        """One-way news of a socket for each of ``services``, without waiting."""
        for service in services:
            self.spawn(self.tell(service, kind, session, **fields))

    async def tell(self, service: str, kind: RequestKind, session: Session,
                   **fields: Any) -> None:
        """One-way news of a socket for a service (a lost one only logs)."""
        try:
            await self.services.request(service, kind, session=session, **fields)
        except ServiceUnavailable as exc:
            log.warning("%s of %s not delivered to %s: %s", kind.name, session.sid, service,
                        exc)

    def transport_changed(self, sock: NsSocket) -> None:
        """Services that keep sockets hear of a new transport (the admin's socket list)."""
        transport = sock.client.transport_name
        if sock.session.transport == transport:
            return
        sock.renew_session(replace(sock.session, transport=transport))
        if self.admin is not None and sock.live:
            self.admin.transport_changed(sock)
        self.tell_all(sock.session, RequestKind.UPDATE,
                      self.services.routing.update_listeners(sock.ns))

    def session_opened(self) -> None:
        if self.admin is not None:
            self.admin.count("rawConnection")

    def session_closed(self, client: Client, reason: str) -> None:
        self.admission.closed(client.conn.sid)
        if self.admin is not None:
            self.admin.count("rawDisconnection", reason)

    # -- sockets that live on elsewhere (connection state recovery) -------------------------
    def holds(self, sid: str) -> bool:
        """Whether socket ``sid`` is connected here. A long-polling client that dropped off
        the network is only noticed at its ping timeout; one that is there has a GET
        waiting (it sends the next one as soon as one is answered), so without one it
        counts as gone."""
        sock = self.index.get(sid)
        if sock is None or not sock.live or sock.client.conn.closed \
                or not sock.client.has(sock):
            return False
        polling = sock.client.polling
        return polling is None or polling.waiting

    def release(self, pub: Publication) -> None:
        """The recovery service gave socket ``pub.sids[0]`` to gateway ``pub.args[0]``."""
        if pub.sids and not (pub.args and pub.args[0] == self.gateway_id):
            self.release_socket(pub.sids[0])

    def release_socket(self, sid: str) -> None:
        """Forget a recoverable socket that lives on elsewhere: no departure is told."""
        if self.recovery is not None:
            self.recovery.cancel(sid)
        sock = self.index.get(sid)
        if sock is None or not sock.client.has(sock):
            return
        client = sock.client
        if not client.conn.closed:
            client.conn.disconnect(sock.ns)
            client.flush()
        self.take_out(sock, "transport close")
        log.info("socket %s recovered elsewhere: forgotten here", sid)
