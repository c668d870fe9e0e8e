"""The request pipelines: what a socket's CONNECT, events and acks become at the services,
and how their replies become packets.

- **CONNECT**: the gate admits it here (token, connect rate, ban: :mod:`.gatekeeper`), then
  one request goes to the namespace's CONNECT stages, each passing it on in priority order;
  any may refuse (CONNECT_ERROR). The ack is sent only after all accepted and the socket's
  rooms are subscribed at the broker, so nothing addressed to it can be missed; then the
  services that count sockets are told (CONNECTED).
- **EVENT**: one request to the first filter, which passes it on (cleaned) along its
  route to the owner, whose reply comes straight back; any filter may refuse instead. The
  reply is applied to the socket (:meth:`Pipelines.apply`: session, joins, leaves,
  ack or failure, emits, disconnect — the one place replies become packets). A socket's
  events keep their order through its :class:`~switchboard.gateway.client.Turn`.
- **Leaving**: a socket that goes is taken out of the local index and every service that
  listens for departures hears of it.

Decisions belong to the services; this module only carries requests and applies replies.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from switchboard.gateway import metrics as m
from switchboard.gateway.adminui import AdminUi
from switchboard.gateway.admission import TOO_MANY_REFUSALS, Admission
from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.fanout import LocalIndex, wait_all
from switchboard.gateway.lane import Turn
from switchboard.gateway.protocol import AckReceived, ConnectRequested, EventReceived
from switchboard.gateway.recovery import Recovery
from switchboard.gateway.routing import RoutingTable
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


class Judge(Protocol):
    """The policy an event must pass before it goes to its owner (gateway.policing)."""

    def judge(self, session: Session, event: str) -> str | None: ...

    def forget(self, sid: str) -> None: ...


class Gate(Protocol):
    """Who may join a namespace, decided here before any service is asked
    (gateway.gatekeeper)."""

    def admit(self, session: Session, auth: Any, headers: Mapping[str, str],
              recovery: RecoveryMode = RecoveryMode.NONE) -> Session: ...

    def rooms_of(self, session: Session) -> tuple[str, ...]: ...


class Services(Protocol):
    """What the pipelines need of the service backbone (:class:`~.backbone.Backbone`)."""

    routing: RoutingTable

    async def request(self, service: str, kind: RequestKind, timeout: float | None = None,
                      sent: asyncio.Future[None] | None = None, **fields: Any) -> Reply: ...


Spawn = Callable[[Coroutine[Any, Any, None]], None]


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


class Pipelines:
    def __init__(self, gateway_id: str, services: Services, index: LocalIndex,
                 meters: m.EventMeters, spawn: Spawn, connect_emit_delay: float = 0.0,
                 sync_timeout: float = 30.0, admission: Admission | None = None,
                 policy: Judge | None = None, gate: Gate | None = None) -> None:
        self.gateway_id = gateway_id
        #: Admits each CONNECT: token, connect rate, ban (None: every socket, anonymous).
        self.gate = gate
        #: Judges every event against moderation's policy (None: nothing limits events).
        self.policy = policy
        #: Told which sessions authenticated (their handshakes are no flood).
        self.admission = admission or Admission(0)
        self.services = services
        self.index = index
        self.meters = meters
        self.spawn = spawn
        self.connect_emit_delay = connect_emit_delay
        self.sync_timeout = sync_timeout
        #: Sessions in their CONNECT pipeline, by socket id (reported in SYNC too).
        self.connecting: dict[str, Session] = {}
        self.peak_sockets: dict[str, int] = {}
        #: The Admin UI's instrumentation, when configured (set by the gateway).
        self.admin: AdminUi | None = None
        #: Connection state recovery, when namespaces have it (set by the gateway).
        self.recovery: Recovery | None = None

    # -- CONNECT ---------------------------------------------------------------------------
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
                              previous: str = "") -> NsSocket | None:
        """Every CONNECT stage, then the socket is indexed, subscribed and acknowledged
        (``restored``: a recovered socket's state; it is acknowledged by the caller)."""
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
        stages = routing.connect_stages(ns)
        try:
            if self.gate is not None:
                session = self.gate.admit(session, auth, client.headers, mode)
                joins.extend(room for room in self.gate.rooms_of(session) if room not in joins)
            if stages:
                # One request: each stage that accepts passes it on to the next with the
                # session as it left it; the last answers us with everything they asked for.
                reply = await self.services.request(
                    stages[0], RequestKind.CONNECT, session=session, auth=auth,
                    headers=client.headers, recovery=mode,
                    sockets=(restored,) if restored is not None else (),
                    route=tuple(stages[1:]),
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
                self._notify_disconnect(replace(session, gateway=previous or session.gateway),
                                        self._listeners(ns))
            else:
                self._notify_disconnect(session, [s for s in accepted
                                                  if s in routing.disconnect_listeners(ns)])
            return None
        sock = NsSocket(session, client)
        if session.user_id is not None:
            self.admission.authenticated(conn.sid, client.address)
        if session.recoverable and self.recovery is not None:
            sock.pid = restored.pid if restored is not None else self.recovery.new_pid()
        if restored is not None:
            sock.held = []
        client.sockets[ns] = sock
        self._count_socket(ns)
        confirmations = self.index.add(sock)
        confirmations.extend(self.index.join(sock, room) for room in joins)
        await wait_all(confirmations, SUBSCRIBE_TIMEOUT)
        if conn.closed or client.sockets.get(ns) is not sock:
            return None
        for service in routing.connected_listeners(ns):
            self.spawn(self._tell(service, RequestKind.CONNECTED, session, recovery=mode))
        if restored is not None:
            sock.emits = emits  # sent once the replay is written
            return sock
        conn.accept(ns, session.sid, sock.pid or None)
        client.flush()
        await self._went_live(sock, emits)
        return sock

    async def _went_live(self, sock: NsSocket, emits: list[Emit]) -> None:
        client, ns = sock.client, sock.ns
        sock.live = True
        self.transport_changed(sock)  # upgraded while its CONNECT went round the services
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
            if client.sockets.get(ns) is not sock:
                return
        for emit in emits:
            self.send_event(sock, emit.event, emit.args, emit.ack_event)
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
        if self.holds(old.sid):
            return False  # still connected here: a pid is restored only for a socket gone
        # The client came back before this gateway (or the one it was on) saw it go.
        self.release_socket(old.sid)
        session = replace(old, gateway=self.gateway_id, address=client.address,
                          transport=client.transport_name, recoverable=True)
        restored = SocketState(session, taken.joins, pid)
        sock = await self._join_namespace(client, request, session, auth, restored,
                                          previous=old.gateway)
        if sock is None:
            return True  # refused (the client was told) or gone
        missed = await recovery.missed(pid, offset)
        if conn.closed or client.sockets.get(ns) is not sock:
            return True
        held, sock.held = sock.held or [], None
        self.index.holding.pop(sock.sid, None)
        emits, sock.emits = sock.emits, []
        if missed is None:
            # Taken, but what it missed is unknown (the recovery service went away): it
            # goes on as a new socket would, with a new pid (recovered: false).
            sock.pid = recovery.new_pid()
            conn.accept(ns, sock.sid, sock.pid)
            floor: dict[str, int] = {}
        else:
            conn.accept(ns, sock.sid, pid)
            sock.offset = offset or sock.offset
            for key, event, args in missed.packets:
                self._send_logged(sock, event, args, key)
            floor = missed.floor
        for pub in held:
            if pub.seq > floor.get(pub.origin, 0) and pub.kind is PubKind.EMIT:
                self._send_held(sock, pub)
        sock.floor = floor or None
        client.flush()
        log.info("socket %s recovered on %s from %s (%d missed packets, %s..%s, %d held)",
                 sock.sid, ns, offset or "-", len(missed.packets) if missed is not None else 0,
                 missed.packets[0][0] if missed and missed.packets else "-",
                 missed.packets[-1][0] if missed and missed.packets else "-", len(held))
        await self._went_live(sock, emits)
        return True

    def _send_held(self, sock: NsSocket, pub: Publication) -> None:
        if pub.origin and not pub.ack_event:
            self._send_logged(sock, pub.event, pub.args, offset_of(pub.origin, pub.seq))
        else:
            self.send_event(sock, pub.event, pub.args, pub.ack_event)

    @staticmethod
    def _send_logged(sock: NsSocket, event: str, args: list[Any], key: str) -> None:
        """An event from the recovery log: its offset last, and the socket's position."""
        sock.client.conn.send_event(sock.ns, event, [*args, key])
        sock.offset = key

    def holds(self, sid: str) -> bool:
        """Whether socket ``sid`` is connected here. A long-polling client that dropped off
        the network is only noticed at its ping timeout; one that is there has a GET
        waiting (it sends the next one as soon as one is answered), so without one it
        counts as gone."""
        sock = self.index.by_sid.get(sid)
        if sock is None or not sock.live or sock.client.conn.closed \
                or sock.client.sockets.get(sock.ns) is not sock:
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
        sock = self.index.by_sid.get(sid)
        if sock is None or sock.client.sockets.get(sock.ns) is not sock:
            return
        client = sock.client
        if not client.conn.closed:
            client.conn.disconnect(sock.ns)
            client.flush()
        self._take_out(sock, "transport close")
        log.info("socket %s recovered elsewhere: forgotten here", sid)

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
        client.sockets[ns] = sock
        # Every gateway reports its sockets at once (~0.5 KB each): the UI's connection may
        # hold that much unsent rather than being cut off as a slow reader.
        client.write_limit = max(client.write_limit, ADMIN_UI_WRITE_LIMIT)
        self._count_socket(ns)
        await wait_all(self.index.add(sock), SUBSCRIBE_TIMEOUT)
        if conn.closed or client.sockets.get(ns) is not sock:
            return
        conn.accept(ns, session.sid)
        sock.live = True
        for event, args in admin.ui_connected(sock):
            conn.send_event(ns, event, args)
        client.flush()
        log.info("Admin UI connected from %s", client.address)

    def _count_socket(self, ns: str) -> None:
        m.SOCKETS.labels(ns).inc()
        m.SOCKETS_TOTAL.labels(ns).inc()
        count = len(self.index.namespaces.get(ns, ())) + 1
        if count > self.peak_sockets.get(ns, 0):
            self.peak_sockets[ns] = count
            m.SOCKETS_PEAK.labels(ns).set(count)

    # -- EVENT -----------------------------------------------------------------------------
    async def event(self, client: Client, request: EventReceived, turn: Turn) -> None:
        """Filters run at once; the owner's request keeps the socket's order (``turn``)."""
        sock = client.sockets.get(request.namespace)
        if sock is None:
            return
        event, args = request.event, request.args
        admin = self.admin
        if admin is not None:
            if sock.ns == admin.namespace:
                await turn.may_apply()
                error = admin.command(event, args)
                if error is not None:
                    self.fail(sock, request, error)
                elif request.ack_id is not None:
                    client.conn.send_ack(sock.ns, request.ack_id, [])
                    client.flush()
                return
            admin.event_received(sock.ns)
        routing = self.services.routing
        owner = routing.owner(sock.ns, event)
        filters = routing.filters(sock.ns)
        await turn.may_send()  # the owner's requests, and the limits, in the socket's order
        if self.policy is not None:
            # An unknown event counts against the sender's limits as any other.
            refusal = self.policy.judge(sock.session, event)
            if refusal is not None:
                turn.nothing_sent()  # the next event need not wait for this one's reply
                await turn.may_apply()
                self.fail(sock, request, refusal)
                return
        try:
            if owner is None:
                # No route: the filters still judge it, then it fails.
                for stage in filters:
                    reply = await self.services.request(
                        stage, RequestKind.FILTER, session=sock.session, event=event,
                        args=args)
                    if not reply.ok:
                        break
                else:
                    reply = Reply(0, ok=False, error=f"unknown event: {event}")
            elif filters:
                # One request: each filter passes it on, the owner answers us (the route).
                reply = await self.services.request(
                    filters[0], RequestKind.FILTER, sent=turn.sent, session=sock.session,
                    event=event, args=args, route=(*filters[1:], owner),
                )
            else:
                reply = await self.services.request(
                    owner, RequestKind.EVENT, sent=turn.sent, session=sock.session,
                    event=event, args=args,
                )
        except ServiceUnavailable as exc:
            log.warning("event %r on %s failed: %s", event, sock.ns, exc)
            await turn.may_apply()
            self.fail(sock, request, ServiceUnavailable.client_message)
            return
        await turn.may_apply()
        await self._apply_async(sock, reply, request)

    async def client_ack(self, client: Client, ack: AckReceived, turn: Turn) -> None:
        """A client acked a server emit: deliver its arguments as the emit's ``ack_event``."""
        sock = client.sockets.get(ack.namespace)
        ack_event = sock.acks.pop(ack.ack_id, None) if sock is not None and sock.acks else None
        if sock is None or ack_event is None:
            log.debug("unexpected ack %s from %s ignored", ack.ack_id, client.conn.sid)
            return
        owner = self.services.routing.owner(sock.ns, ack_event)
        if owner is None:
            return
        await turn.may_send()
        try:
            reply = await self.services.request(
                owner, RequestKind.EVENT, sent=turn.sent, session=sock.session,
                event=ack_event, args=ack.args,
            )
        except ServiceUnavailable as exc:
            log.warning("ack event %r not delivered: %s", ack_event, exc)
            return
        await turn.may_apply()
        await self._apply_async(sock, reply, EventReceived(sock.ns, ack_event, ack.args, None))

    def send_event(self, sock: NsSocket, event: str, args: list[Any], ack_event: str) -> None:
        """An event for one socket; with ``ack_event`` the client's ack comes back as it."""
        if ack_event:
            sock.client.conn.send_event(sock.ns, event, args, sock.expect_ack(ack_event))
        else:
            sock.client.conn.send_event(sock.ns, event, sock.tail(args))

    async def _apply_async(self, sock: NsSocket, reply: Reply, request: EventReceived) -> None:
        if reply.session is not None and sock.client.sockets.get(sock.ns) is sock:
            sock.session = reply.session
        if reply.joins:
            await wait_all([self.index.join(sock, room) for room in reply.joins],
                           SUBSCRIBE_TIMEOUT)
        self.apply(sock, reply, request)

    def apply(self, sock: NsSocket, reply: Reply, request: EventReceived) -> None:
        """Apply a final reply to the requesting socket: the one place replies become packets."""
        client = sock.client
        if client.sockets.get(sock.ns) is not sock:
            return  # left the namespace meanwhile
        for room in reply.leaves:
            self.index.leave(sock, room)
        if not reply.ok:
            self.fail(sock, request, reply.error or "request failed")
        elif request.ack_id is not None and reply.ack is not None:
            client.conn.send_ack(sock.ns, request.ack_id, reply.ack)
        for emit in reply.emits:
            self.send_event(sock, emit.event, emit.args, emit.ack_event)
        if reply.disconnect:
            client.conn.disconnect(sock.ns)
            self.drop_socket(sock)
        client.flush()

    def fail(self, sock: NsSocket, request: EventReceived, message: str) -> None:
        """Failures reach the client as a failed ack, or as an ``error`` event without one."""
        self.meters.failed(sock.ns, request.event).inc()
        conn = sock.client.conn
        if request.ack_id is not None:
            conn.send_ack(sock.ns, request.ack_id, [{"success": False, "error": message}])
        else:
            conn.send_event(sock.ns, "error",
                            sock.tail([{"event": request.event, "message": message}]))
        sock.client.flush()

    # -- leaving and telling ---------------------------------------------------------------
    def drop_socket(self, sock: NsSocket, reason: str = "", recoverable: bool = False) -> None:
        """``reason``: Socket.IO's disconnect reason, for the Admin UI (guessed if empty);
        ``recoverable``: the connection dropped (it did not leave): a socket with recovery
        may come back within the window, so its departure waits out the grace."""
        if not reason:
            reason = ("transport close" if sock.client.conn.closed
                      else "server namespace disconnect")
        if not self._take_out(sock, reason):
            return
        if self.admin is not None and sock.ns == self.admin.namespace:
            return  # no service knows of it
        log.info("socket %s left %s (user %s) after %.1fs", sock.sid, sock.ns,
                 sock.session.user_id or "-", time.time() - sock.session.connected_at)
        recovery, session = self.recovery, sock.session
        if sock.pid and recovery is not None and recoverable:
            listeners = self._listeners(sock.ns)
            recovery.detach(sock, lambda: self._notify_disconnect(session, listeners))
            return
        if sock.pid and recovery is not None:
            recovery.forget(session)
        self._notify_disconnect(session, self._listeners(sock.ns))

    def _take_out(self, sock: NsSocket, reason: str) -> bool:
        """The socket out of its connection and the index (False: it was out already)."""
        client = sock.client
        if client.sockets.get(sock.ns) is not sock:
            return False
        del client.sockets[sock.ns]
        self.index.remove(sock)
        if self.policy is not None:
            self.policy.forget(sock.sid)
        m.SOCKETS.labels(sock.ns).dec()
        if self.admin is not None and sock.live:
            self.admin.socket_disconnected(sock, reason)
        return True

    def _listeners(self, ns: str) -> list[str]:
        """Who hears of a departure, but the recovery service (told by ``recovery``)."""
        routing = self.services.routing
        return [name for name in routing.disconnect_listeners(ns) if name != routing.recovery]

    def drop_all(self, client: Client, recoverable: bool = False) -> None:
        for sock in list(client.sockets.values()):
            self.drop_socket(sock, recoverable=recoverable)

    def _notify_disconnect(self, session: Session, services: Iterable[str]) -> None:
        for service in services:
            self.spawn(self._tell(service, RequestKind.DISCONNECT, session))

    def session_opened(self) -> None:
        if self.admin is not None:
            self.admin.count("rawConnection")

    def session_closed(self, client: Client, reason: str) -> None:
        self.admission.closed(client.conn.sid)
        if self.admin is not None:
            self.admin.count("rawDisconnection", reason)

    def transport_changed(self, sock: NsSocket) -> None:
        """Services that keep sockets hear of a new transport (the admin's socket list)."""
        transport = sock.client.transport_name
        if sock.session.transport == transport:
            return
        sock.session = replace(sock.session, transport=transport)
        if self.admin is not None and sock.live:
            self.admin.transport_changed(sock)
        for service in self.services.routing.update_listeners(sock.ns):
            self.spawn(self._tell(service, RequestKind.UPDATE, sock.session))

    async def _tell(self, service: str, kind: RequestKind, session: Session,
                    **fields: Any) -> None:
        try:
            await self.services.request(service, kind, session=session, **fields)
        except ServiceUnavailable as exc:
            log.warning("%s of %s not delivered to %s: %s", kind.name, session.sid, service,
                        exc)

    async def sync_service(self, service: str) -> None:
        """Send ``service`` every local socket and its rooms (it restarted, or lost us)."""
        # Sockets still in their CONNECT pipeline count too: a stage may already have
        # registered them, and a SYNC without them would make the service drop them.
        connecting = tuple(SocketState(session) for session in self.connecting.values())
        own = self.admin.namespace if self.admin is not None else None
        sockets = tuple(
            SocketState(sock.session, tuple(sorted(sock.rooms)), sock.pid)
            for sock in self.index.by_sid.values() if sock.ns != own
        ) + connecting
        try:
            await self.services.request(service, RequestKind.SYNC, timeout=self.sync_timeout,
                                        sockets=sockets)
            log.info("sent %d sockets to %s", len(sockets), service)
        except ServiceUnavailable as exc:
            log.warning("SYNC to %s failed: %s", service, exc)
