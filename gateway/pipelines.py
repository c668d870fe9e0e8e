"""The request pipelines of a socket (:class:`Pipelines`): what its CONNECT, events and
acks become at the services, and how their replies become packets.

- **CONNECT**: :class:`~.connects.Connects` (the gate, the CONNECT stages, recovery).
- **EVENT**: one request to the first filter, which passes it on (cleaned) along its
  route to the owner, whose reply comes straight back; any filter may refuse instead. The
  reply is applied to the socket (:meth:`Pipelines.apply`: session, joins, leaves,
  ack or failure, emits, disconnect — the one place replies become packets). A socket's
  events keep their order through its :class:`~switchboard.gateway.lane.Turn`.
- **Leaving**: :class:`~.departures.Departures`.

Decisions belong to the services; these modules only carry requests and apply replies.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from switchboard.gateway import metrics as m
from switchboard.gateway.adminui import AdminUi
from switchboard.gateway.admission import Admission
from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.connects import SUBSCRIBE_TIMEOUT, Connects
from switchboard.gateway.departures import Departures
from switchboard.gateway.gather import gathered
from switchboard.gateway.index import LocalIndex
from switchboard.gateway.lane import Turn
from switchboard.gateway.needs import Gate, Judge, Services, Spawn
from switchboard.gateway.protocol import AckReceived, ConnectRequested, EventReceived
from switchboard.gateway.recovery import Recovery
from switchboard.gateway.subscriptions import wait_all
from switchboard.shared.envelope import Reply, RequestKind
from switchboard.shared.errors import ServiceUnavailable

log = logging.getLogger("switchboard.gateway")


class Pipelines:
    """The gateway's :class:`~.sessions.SocketWork`: events and acks here, CONNECTs and
    departures in the parts it is built with."""

    def __init__(self, gateway_id: str, services: Services, index: LocalIndex,
                 meters: m.EventMeters, spawn: Spawn, connect_emit_delay: float = 0.0,
                 sync_timeout: float = 30.0, admission: Admission | None = None,
                 policy: Judge | None = None, gate: Gate | None = None,
                 recovery: Recovery | None = None, admin: AdminUi | None = None) -> None:
        admission = admission or Admission(0)
        self.services = services
        self.index = index
        self.meters = meters
        #: Judges every event against moderation's policy (None: nothing limits events).
        self.policy = policy
        #: The Admin UI's instrumentation, when configured.
        self.admin = admin
        self.departures = Departures(gateway_id, services, index, spawn, admission,
                                     policy=policy, recovery=recovery, admin=admin)
        self.connects = Connects(gateway_id, services, index, spawn, self.departures,
                                 admission, gate=gate, recovery=recovery, admin=admin,
                                 connect_emit_delay=connect_emit_delay,
                                 sync_timeout=sync_timeout)

    # -- what sessions hand over (SocketWork), done by the part that owns it ----------------
    async def connect(self, client: Client, request: ConnectRequested) -> None:
        await self.connects.connect(client, request)

    def drop_socket(self, sock: NsSocket, reason: str = "") -> None:
        self.departures.drop_socket(sock, reason)

    def drop_all(self, client: Client, recoverable: bool = False) -> None:
        self.departures.drop_all(client, recoverable)

    def transport_changed(self, sock: NsSocket) -> None:
        self.departures.transport_changed(sock)

    def session_opened(self) -> None:
        self.departures.session_opened()

    def session_closed(self, client: Client, reason: str) -> None:
        self.departures.session_closed(client, reason)

    # -- EVENT and acks --------------------------------------------------------------------
    async def event(self, client: Client, request: EventReceived, turn: Turn) -> None:
        """Filters run at once; the owner's request keeps the socket's order (``turn``)."""
        sock = client.socket(request.namespace)
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
        target = owner.pick(sock.session, args) if owner and not owner.gathered else ""
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
            elif owner.gathered:
                reply = await self._gather(owner.members, sock, event, args, turn)
            elif filters:
                # One request: each filter passes it on, the owner answers us (the route).
                reply = await self.services.request(
                    filters[0], RequestKind.FILTER, sent=turn.sent, session=sock.session,
                    event=event, args=args, route=(*filters[1:], target),
                )
            else:
                reply = await self.services.request(
                    target, RequestKind.EVENT, sent=turn.sent,
                    session=sock.session, event=event, args=args,
                )
        except ServiceUnavailable as exc:
            log.warning("event %r on %s failed: %s", event, sock.ns, exc)
            await turn.may_apply()
            self.fail(sock, request, ServiceUnavailable.client_message)
            return
        if reply.session is not None and owner is not None and len(owner.members) > 1:
            # The other instances keep this socket too (in their rooms): they hear of its
            # new session (a new name) as of a new transport.
            self.departures.tell_all(reply.session, RequestKind.UPDATE,
                                     [name for name in owner.members if name != target],
                                     event=event)
        await turn.may_apply()
        await self._apply_async(sock, reply, request)

    async def _gather(self, members: tuple[str, ...], sock: NsSocket, event: str,
                      args: list[Any], turn: Turn) -> Reply:
        """A cluster-wide read: every instance at once, answers merged (:mod:`.gather`);
        those that fail or miss the deadline are named in the answer, never waited for
        past it. Reads pass no filters (filters judge what changes state)."""
        loop = asyncio.get_running_loop()
        sent = [loop.create_future() for _ in members]
        tasks = [asyncio.ensure_future(self.services.request(
            name, RequestKind.EVENT, sent=went, session=sock.session, event=event, args=args))
            for name, went in zip(members, sent, strict=True)]
        await asyncio.wait(sent)
        turn.nothing_sent()  # all are on their way: the socket's next event may go
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        replies: dict[str, Reply] = {}
        for name, outcome in zip(members, outcomes, strict=True):
            if isinstance(outcome, Reply):
                replies[name] = outcome
            elif not isinstance(outcome, ServiceUnavailable):
                raise outcome
        if not replies:
            raise ServiceUnavailable(f"no instance of {', '.join(members)} answered")
        missing = tuple(name for name in members if name not in replies)
        failed = [f"{name} ({reply.error})" for name, reply in replies.items() if not reply.ok]
        if missing or failed:
            log.warning("%r answered without %s", event, ", ".join([*missing, *failed]))
        return gathered(replies, missing)

    async def client_ack(self, client: Client, ack: AckReceived, turn: Turn) -> None:
        """A client acked a server emit: deliver its arguments as the emit's ``ack_event``."""
        sock = client.socket(ack.namespace)
        ack_event = sock.take_ack(ack.ack_id) if sock is not None else None
        if sock is None or ack_event is None:
            log.debug("unexpected ack %s from %s ignored", ack.ack_id, client.conn.sid)
            return
        owner = self.services.routing.owner(sock.ns, ack_event)
        if owner is None:
            return
        await turn.may_send()
        try:
            reply = await self.services.request(
                owner.pick(sock.session, ack.args), RequestKind.EVENT, sent=turn.sent,
                session=sock.session, event=ack_event, args=ack.args,
            )
        except ServiceUnavailable as exc:
            log.warning("ack event %r not delivered: %s", ack_event, exc)
            return
        await turn.may_apply()
        await self._apply_async(sock, reply, EventReceived(sock.ns, ack_event, ack.args, None))

    async def _apply_async(self, sock: NsSocket, reply: Reply, request: EventReceived) -> None:
        if reply.session is not None and sock.client.has(sock):
            sock.renew_session(reply.session)
        if reply.joins:
            await wait_all([self.index.join(sock, room) for room in reply.joins],
                           SUBSCRIBE_TIMEOUT)
        self.apply(sock, reply, request)

    def apply(self, sock: NsSocket, reply: Reply, request: EventReceived) -> None:
        """Apply a final reply to the requesting socket: the one place replies become packets."""
        client = sock.client
        if not client.has(sock):
            return  # left the namespace meanwhile
        for room in reply.leaves:
            self.index.leave(sock, room)
        if not reply.ok:
            self.fail(sock, request, reply.error or "request failed")
        elif request.ack_id is not None and reply.ack is not None:
            client.conn.send_ack(sock.ns, request.ack_id, reply.ack)
        acked = request.ack_id is not None
        for emit in reply.emits:
            if not (acked and emit.unless_acked):
                sock.send_event(emit.event, emit.args, emit.ack_event)
        if reply.disconnect:
            client.conn.disconnect(sock.ns)
            self.departures.drop_socket(sock)
        client.flush()

    def fail(self, sock: NsSocket, request: EventReceived, message: str) -> None:
        """Failures reach the client as a failed ack, or as an ``error`` event without one."""
        self.meters.failed(sock.ns, request.event).inc()
        conn = sock.client.conn
        if request.ack_id is not None:
            conn.send_ack(sock.ns, request.ack_id, [{"success": False, "error": message}])
        else:
            sock.send_event("error", [{"event": request.event, "message": message}])
        sock.client.flush()
