"""A socket's CONNECT (:class:`Connects`): admitted here by the gate (token, connect rate,
ban: :mod:`.gatekeeper`), then one request to the namespace's CONNECT stages, each passing it
on in priority order, any of which may refuse (CONNECT_ERROR). The ack is sent only after all
accepted and the socket's rooms are subscribed at the broker, so nothing addressed to it can
be missed; then the services that count sockets are told (CONNECTED). A CONNECT with a
recovery id restores its socket instead: same id, rooms, and what it missed. The Admin UI's
namespace is the gateway's own, and connects here without any service."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import replace
from typing import Any

from switchboard.gateway import metrics as m
from switchboard.gateway.adminui import AdminUi
from switchboard.gateway.admission import TOO_MANY_REFUSALS, Admission
from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.departures import Departures
from switchboard.gateway.index import LocalIndex
from switchboard.gateway.needs import Gate, Services, Spawn
from switchboard.gateway.protocol import ConnectRequested
from switchboard.gateway.recovery import Recovery
from switchboard.gateway.subscriptions import wait_all
from switchboard.shared.envelope import (
    Emit,
    PubKind,
    Publication,
    Reply,
    RequestKind,
    Session,
    SocketState,
)
from switchboard.shared.envelope import Recovery as RecoveryMode
from switchboard.shared.errors import Refused, ServiceUnavailable
from switchboard.shared.journal import offset as offset_of

log = logging.getLogger("switchboard.gateway")

#: CONNECT refusal texts counted by name; anything else is "other" (bounded labels).
KNOWN_REFUSALS = (
    "Invalid namespace", "Authentication error: No token provided",
    "Authentication error: Invalid token", "Access denied: admin role required",
    "Rate limit exceeded", "Banned", "Service unavailable",
)
SUBSCRIBE_TIMEOUT = 2.0
#: The unsent bytes an Admin UI connection may hold (the cluster's sockets, reported at once).
ADMIN_UI_WRITE_LIMIT = 64 * 1024 * 1024


def _accepted_before(stages: tuple[str, ...], refused: Reply) -> list[str]:
    """The CONNECT stages that accepted a socket another one refused (``refused.service``;
    one that could not reach the next stage accepted it too)."""
    who = refused.service or stages[0]
    if who not in stages:
        return []
    index = stages.index(who)
    if refused.error == ServiceUnavailable.client_message:
        index += 1
    return list(stages[:index])


class Connects:
    def __init__(self, gateway_id: str, services: Services, index: LocalIndex, spawn: Spawn,
                 departures: Departures, admission: Admission, gate: Gate | None = None,
                 recovery: Recovery | None = None, admin: AdminUi | None = None,
                 connect_emit_delay: float = 0.0, sync_timeout: float = 30.0) -> None:
        self.gateway_id = gateway_id
        self.services = services
        self.index = index
        self.spawn = spawn
        self.departures = departures
        #: Told which sessions authenticated (their handshakes are no flood).
        self.admission = admission
        #: Admits each CONNECT: token, connect rate, ban (None: every socket, anonymous).
        self.gate = gate
        self.recovery = recovery
        self.admin = admin
        self.connect_emit_delay = connect_emit_delay
        self.sync_timeout = sync_timeout
        #: Sessions in their CONNECT pipeline, by socket id (reported in SYNC too).
        self.connecting: dict[str, Session] = {}
        self.peak_sockets: dict[str, int] = {}

    async def connect(self, client: Client, request: ConnectRequested) -> None:
        ns = request.namespace
        conn = client.conn
        admin = self.admin
        if admin is not None and ns == admin.namespace:
            await self._connect_admin_ui(client, request, admin)
            return
        routing = self.services.routing
        if not self.admission.may_ask(conn.sid):
            conn.refuse(ns, TOO_MANY_REFUSALS)
            client.flush()
            m.CONNECT_REFUSALS.labels("other", "other").inc()
            return
        if ns not in routing.namespaces:
            conn.refuse(ns, "Invalid namespace")
            client.flush()
            m.CONNECT_REFUSALS.labels("other", "Invalid namespace").inc()
            return
        recovery = self.recovery
        recoverable = recovery is not None and recovery.applies(ns, conn.eio)
        auth = request.auth if isinstance(request.auth, dict) else {}
        if recoverable and isinstance(auth.get("pid"), str) and \
                await self._restore(client, request, auth):
            return
        session = Session(
            sid=f"{self.gateway_id}.{secrets.token_urlsafe(9)}",
            ns=ns,
            gateway=self.gateway_id,
            address=client.address,
            connected_at=time.time(),
            transport=client.transport_name,
            recoverable=recoverable,
        )
        await self._join_namespace(client, request, session, auth)

    async def _join_namespace(self, client: Client, request: ConnectRequested,
                              session: Session, auth: dict[str, Any],
                              restored: SocketState | None = None,
                              previous: str = "") -> tuple[NsSocket, list[Emit]] | None:
        """Every CONNECT stage, then the socket is indexed, subscribed and acknowledged
        (``restored``: a recovered socket's state; the caller acknowledges it and writes the
        stages' emits, handed back, after its replay)."""
        ns, conn, routing = request.namespace, client.conn, self.services.routing
        mode = RecoveryMode.NONE
        if restored is not None:
            mode = (RecoveryMode.SKIP if self.recovery is None
                    or self.recovery.settings.skip_middlewares else RecoveryMode.CHECK)
        joins: list[str] = list(restored.rooms) if restored is not None else []
        emits: list[Emit] = []
        accepted: list[str] = []
        refusal: str | None = None
        self.connecting[session.sid] = session
        stages: tuple[str, ...] = ()
        try:
            if self.gate is not None:
                session = self.gate.admit(session, auth, client.headers, mode)
                joins.extend(room for room in self.gate.rooms_of(session) if room not in joins)
            # A partitioned stage is the instance the socket's identity (known once the
            # gate read its token) hashes to.
            stages = tuple(stage.pick(session, []) for stage in routing.connect_stages(ns))
            if stages:
                # One request: each stage that accepts passes it on to the next with the
                # session as it left it; the last answers us with everything they asked for.
                reply = await self.services.request(
                    stages[0], RequestKind.CONNECT, session=session, auth=auth,
                    headers=client.headers, recovery=mode,
                    sockets=(restored,) if restored is not None else (),
                    route=stages[1:],
                )
                if reply.session is not None:
                    session = reply.session
                if reply.ok:
                    accepted = list(stages)
                    joins.extend(reply.joins)
                    emits.extend(reply.emits)
                else:
                    refusal = reply.error or "Connection refused"
                    accepted = _accepted_before(stages, reply)
                    if refusal == ServiceUnavailable.client_message:
                        refusal = "Service unavailable"
        except Refused as exc:  # by this gateway, before any service was asked
            refusal = exc.message
        except ServiceUnavailable as exc:
            log.warning("CONNECT to %s refused: %s", ns, exc)
            refusal = "Service unavailable"
            # How far it got is not known: the stages that pass it on hear the socket is
            # gone (as when a stage timed out before); the last, which had to answer, is
            # not told of a socket it may never have seen (it would announce it offline).
            accepted = list(stages[:-1])
        finally:
            self.connecting.pop(session.sid, None)
        if refusal is not None or conn.closed:
            if not conn.closed:
                refusal = refusal or "Connection refused"
                if refusal != "Service unavailable":  # the client's doing, not ours
                    self.admission.refused(conn.sid)
                conn.refuse(ns, refusal)
                client.flush()
                m.CONNECT_REFUSALS.labels(
                    ns, refusal if refusal in KNOWN_REFUSALS else "other").inc()
                log.info("CONNECT to %s from %s refused: %s", ns, client.address, refusal)
            if restored is not None and self.recovery is not None and \
                    refusal == "Service unavailable":
                # Not a decision: the session stays recoverable, for the client's next try.
                self.recovery.detach_only(session)
            elif restored is not None and self.recovery is not None:
                # Refused on its way back (e.g. banned meanwhile): it leaves for good, from
                # where the services last knew it.
                self.recovery.forget(session)
                self.departures.notify(replace(session, gateway=previous or session.gateway),
                                       self.departures.listeners(ns))
            else:
                self.departures.notify(session, [s for s in accepted
                                                 if s in routing.disconnect_listeners(ns)])
            return None
        sock = NsSocket(session, client)
        if session.user_id is not None:
            self.admission.authenticated(conn.sid, client.address)
        if session.recoverable and self.recovery is not None:
            sock.recover(restored.pid if restored is not None else self.recovery.new_pid())
        client.add_socket(sock)
        self._count_socket(ns)
        confirmations = self.index.add(sock, restoring=restored is not None)
        confirmations.extend(self.index.join(sock, room) for room in joins)
        await wait_all(confirmations, SUBSCRIBE_TIMEOUT)
        if conn.closed or not client.has(sock):
            return None
        # The instance of a partitioned service that was the stage knows already; the others
        # are told (a restored socket's state goes with it, for the rooms they own).
        for service in routing.connected_listeners(ns):
            if not (service in stages and routing.partitioned(service)):
                self.spawn(self.departures.tell(
                    service, RequestKind.CONNECTED, session, recovery=mode,
                    sockets=(restored,) if restored is not None else ()))
        if restored is not None:
            return sock, emits  # sent once the replay is written
        conn.accept(ns, session.sid, sock.pid or None)
        client.flush()
        await self._went_live(sock, emits)
        return sock, []

    async def _went_live(self, sock: NsSocket, emits: list[Emit]) -> None:
        client = sock.client
        sock.go_live()
        # It may have upgraded while its CONNECT went round the services.
        self.departures.transport_changed(sock)
        if self.admin is not None:
            self.admin.socket_connected(sock)
        if sock.pid and self.recovery is not None:
            self.recovery.attach(sock)
        if not emits:
            return
        if self.connect_emit_delay:
            # Write the CONNECT ack before the first emit rather than in the same burst:
            # naive clients (the official protocol test suite among them) read one packet
            # per wake-up and would miss a second one in the same read. Real clients need
            # no gap, so by default the emits leave in the same write as the ack.
            await client.drain(1.0)
            await asyncio.sleep(self.connect_emit_delay)
            if not client.has(sock):
                return
        for emit in emits:
            sock.send_event(emit.event, emit.args, emit.ack_event)
        client.flush()

    # -- connection state recovery ---------------------------------------------------------
    async def _restore(self, client: Client, request: ConnectRequested,
                       auth: dict[str, Any]) -> bool:
        """A CONNECT with a ``pid``: take its session from the recovery service, let the
        CONNECT stages see it, subscribe its rooms, then write what it missed and go live
        with the same socket id. False when it cannot be recovered: a new socket then."""
        recovery = self.recovery
        assert recovery is not None
        pid: str = auth["pid"]
        given = auth.get("offset")
        offset = given if isinstance(given, str) else ""
        taken = await recovery.take(pid, offset)
        conn, ns = client.conn, request.namespace
        if taken is None or taken.session is None or conn.closed:
            return False
        old = taken.session
        if old.ns != ns:  # a pid restores the socket of its own namespace only
            recovery.detach_only(old)  # still there for a CONNECT to its namespace
            return False
        if self.departures.holds(old.sid):
            return False  # still connected here: a pid is restored only for a socket gone
        # The client came back before this gateway (or the one it was on) saw it go.
        self.departures.release_socket(old.sid)
        session = replace(old, gateway=self.gateway_id, address=client.address,
                          transport=client.transport_name, recoverable=True)
        restored = SocketState(session, taken.joins, pid)
        joined = await self._join_namespace(client, request, session, auth, restored,
                                            previous=old.gateway)
        if joined is None:
            return True  # refused (the client was told) or gone
        sock, emits = joined
        missed = await recovery.missed(pid, offset)
        if conn.closed or not client.has(sock):
            return True
        held = self.index.restored(sock)
        if missed is None:
            # Taken, but what it missed is unknown (the recovery service went away): it
            # goes on as a new socket would, with a new pid (recovered: false).
            sock.recover(recovery.new_pid())
            conn.accept(ns, sock.sid, sock.pid)
            floor: dict[str, int] = {}
            sock.resume(sock.offset, None)
        else:
            conn.accept(ns, sock.sid, pid)
            sock.resume(offset or sock.offset, missed.floor)
            for key, event, args in missed.packets:
                sock.send_logged(event, args, key)
            floor = missed.floor
        for pub in held:
            if pub.seq > floor.get(pub.origin, 0) and pub.kind is PubKind.EMIT:
                self._send_held(sock, pub)
        client.flush()
        log.info("socket %s recovered on %s from %s (%d missed packets, %s..%s, %d held)",
                 sock.sid, ns, offset or "-", len(missed.packets) if missed is not None else 0,
                 missed.packets[0][0] if missed and missed.packets else "-",
                 missed.packets[-1][0] if missed and missed.packets else "-", len(held))
        await self._went_live(sock, emits)
        return True

    def _send_held(self, sock: NsSocket, pub: Publication) -> None:
        if pub.origin and not pub.ack_event:
            sock.send_logged(pub.event, pub.args, offset_of(pub.origin, pub.seq))
        else:
            sock.send_event(pub.event, pub.args, pub.ack_event)

    async def _connect_admin_ui(self, client: Client, request: ConnectRequested,
                                admin: AdminUi) -> None:
        """The Admin UI's namespace is the gateway's own: no service takes part."""
        ns, conn = request.namespace, client.conn
        refusal = await admin.sign_in(request.auth, client.address)
        if refusal is not None:
            conn.refuse(ns, refusal)
            client.flush()
            m.CONNECT_REFUSALS.labels(ns, "other").inc()
            log.warning("Admin UI sign-in refused from %s", client.address)
            return
        session = Session(sid=f"{self.gateway_id}.{secrets.token_urlsafe(9)}", ns=ns,
                          gateway=self.gateway_id, address=client.address,
                          connected_at=time.time(), transport=client.transport_name)
        sock = NsSocket(session, client)
        client.add_socket(sock)
        # Every gateway reports its sockets at once (~0.5 KB each): the UI's connection may
        # hold that much unsent rather than being cut off as a slow reader.
        client.allow_buffering(ADMIN_UI_WRITE_LIMIT)
        self._count_socket(ns)
        await wait_all(self.index.add(sock), SUBSCRIBE_TIMEOUT)
        if conn.closed or not client.has(sock):
            return
        conn.accept(ns, session.sid)
        sock.go_live()
        for event, args in admin.ui_connected(sock):
            conn.send_event(ns, event, args)
        client.flush()
        log.info("Admin UI connected from %s", client.address)

    def _count_socket(self, ns: str) -> None:
        m.SOCKETS.labels(ns).inc()
        m.SOCKETS_TOTAL.labels(ns).inc()
        count = self.index.count(ns) + 1
        if count > self.peak_sockets.get(ns, 0):
            self.peak_sockets[ns] = count
            m.SOCKETS_PEAK.labels(ns).set(count)

    async def sync_service(self, service: str) -> None:
        """Send ``service`` every local socket and its rooms (it restarted, or lost us)."""
        # Sockets still in their CONNECT pipeline count too: a stage may already have
        # registered them, and a SYNC without them would make the service drop them.
        connecting = tuple(SocketState(session) for session in self.connecting.values())
        own = self.admin.namespace if self.admin is not None else None
        sockets = tuple(
            SocketState(sock.session, tuple(sorted(sock.rooms)), sock.pid)
            for sock in self.index.sockets() if sock.ns != own
        ) + connecting
        try:
            await self.services.request(service, RequestKind.SYNC, timeout=self.sync_timeout,
                                        sockets=sockets)
            log.info("sent %d sockets to %s", len(sockets), service)
        except ServiceUnavailable as exc:
            log.warning("SYNC to %s failed: %s", service, exc)
