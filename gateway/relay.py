"""Sessions another gateway owns: requests passed to their owner, and sessions that move.

- A polling request for a session owned elsewhere is **forwarded** to the owner (the sid
  names it) over the peer sockets, and its answer relayed; a forwarded GET whose client goes
  away is ABORTed at the owner.
- Requests that reach this gateway from peers are **served** here (``Local.poll``).
- **Ghosts**: a session whose client gave it up on a relay's fault is ended at once, not at
  its ping timeout. A GET this gateway failed because its owner's connection dropped (the
  client was told ``Session ID unknown`` and opens a new session) is ABORTed at that owner
  once it is reachable again — it may only have been frozen, still holding the GET. A
  session owned here whose last GET went through a relay that then died (the answer on its
  way died with it: nothing is held here, nothing would end it) ends when that relay is
  known lost.
- A WebSocket for a session owned elsewhere **claims** it: while nobody has connected a
  namespace on it, the owner **hands it over** (what is queued for the client and what it
  sent and was held) and keeps a forwarding entry (``moved``) for requests still addressed
  to it; otherwise the claim is refused and the session stays where it is.

``docs/polling.md`` has the design and its costs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from switchboard.gateway import http
from switchboard.gateway import metrics as m
from switchboard.gateway.answers import Answer, RemoteAnswer, RemoteWaits
from switchboard.gateway.client import Client
from switchboard.gateway.exchange import Upgrade
from switchboard.gateway.http import EngineError, engine_error
from switchboard.gateway.peers import Peer, PeerConnectionLost, Peers, PeerUnavailable
from switchboard.gateway.protocol.polling import UpgradeState
from switchboard.shared import topics
from switchboard.shared.envelope import Handover, PeerKind, PeerReply, PeerRequest

log = logging.getLogger("switchboard.gateway.relay")

#: How long a gateway relays requests for a session that moved to another gateway.
MOVED_TTL = 120.0
MOVED_MAX = 100_000
#: How long to wait for the announcement of a gateway not heard of yet (one just started).
FIND_WAIT = 2.5
#: GETs remembered per owner for an ABORT once it is reachable again.
UNANSWERED_MAX = 10_000


class Local(Protocol):
    """What the relay needs of this gateway's Engine.IO endpoint (:class:`~.engine.Engine`)."""

    sessions: dict[str, Client]

    def poll(self, sid: str, method: str, body: bytes, answer: Answer) -> None:
        """A polling request for ``sid``: serve it, or pass it on."""

    def serve(self, client: Client, method: str, body: bytes, answer: Answer) -> None:
        """A polling request for a session owned here."""

    def take_over(self, handover: Handover) -> Client:
        """Start a session handed over by another gateway."""

    def probe(self, client: Client, upgrade: Upgrade, handshake: bytes) -> None:
        """Run the upgrade probe on a WebSocket for a session owned here."""

    def refuse_probe(self, upgrade: Upgrade) -> None:
        """Refuse the WebSocket's handshake (the session cannot upgrade now)."""

    def give_up(self, client: Client) -> None:
        """Forget a session that moved to another gateway (no departures: no sockets)."""

    def abandoned(self, client: Client) -> None:
        """The session's client gave it up (its poll failed): end it now."""


class Relay:
    def __init__(self, gateway_id: str, peers: Peers | None, local: Local,
                 forward_timeout: float, poll_timeout: float,
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.id = gateway_id
        self.peers = peers
        self.local = local
        self.forward_timeout = forward_timeout
        self.poll_timeout = poll_timeout
        self.spawn = spawn
        self.remote = RemoteWaits(peers)
        if peers is not None:
            peers.on_lost = self.peer_lost
            peers.on_connected = self.peer_connected
        #: Owner gateway → (its instance, sid, request id) of the GETs failed here when the
        #: connection to it dropped (ABORTed there when it is back).
        self.unanswered: dict[str, list[tuple[str, str, int]]] = {}
        #: Sessions owned here whose last GET was forwarded by another gateway: sid →
        #: (that gateway, its instance).
        self.polled_via: dict[str, tuple[str, str]] = {}
        #: Sessions that moved to another gateway: sid → (that gateway, until when).
        self.moved: dict[str, tuple[str, float]] = {}
        #: Claims under way from here: requests relayed meanwhile wait for them.
        self.claims: dict[str, asyncio.Future[None]] = {}
        self.counters = {"forwarded": 0, "relayed": 0, "handovers": 0}

    # -- where a session is ------------------------------------------------------------------
    def owner(self, sid: str) -> str | None:
        """The gateway to pass requests for ``sid`` to, if not this one."""
        moved = self.moved.get(sid)
        if moved is not None:
            return moved[0]
        try:
            owner = topics.gateway_of(sid)
        except ValueError:
            return None
        return owner if owner != self.id else None

    def pass_on(self, sid: str, method: str, body: bytes, answer: Answer,
                forwarded: bool) -> None:
        """A request for a session not here: wait for our claim, relay, or refuse."""
        claim = self.claims.get(sid)
        if claim is not None:  # a relayed request overtook our claim's answer: wait for it
            self.spawn(self._after_claim(claim, sid, method, body, answer, forwarded))
            return
        owner = self.owner(sid)
        if owner is None or (forwarded and sid not in self.moved):
            # Unknown, or sent here by a peer as if we owned it: no forwarding loops.
            answer.reply(engine_error(EngineError.UNKNOWN_SID))
            return
        if sid in self.moved:
            self.counters["relayed"] += 1
        self.spawn(self._forward(owner, sid, method, body, answer))

    async def _after_claim(self, claim: asyncio.Future[None], sid: str, method: str,
                           body: bytes, answer: Answer, forwarded: bool) -> None:
        await asyncio.wait([claim], timeout=self.forward_timeout)
        client = self.local.sessions.get(sid)
        if client is not None:  # the claim brought the session here
            self.local.serve(client, method, body, answer)
        elif not claim.done():
            answer.reply(engine_error(EngineError.UNKNOWN_SID))
        else:
            # The claim was refused (a v2 session, or one with a namespace connected): the
            # session stays with its owner, and so does this request. (Answering it
            # "Session ID unknown" ended a live session whose probe and poll both reached
            # this gateway at once: the v2 client's 400 behind a balancer.)
            self.pass_on(sid, method, body, answer, forwarded)

    async def _forward(self, owner: str, sid: str, method: str, body: bytes,
                       answer: Answer) -> None:
        peer = await self._peer(owner)
        if peer is None:
            answer.reply(engine_error(EngineError.UNKNOWN_SID))
            return
        assert self.peers is not None
        peers = self.peers
        request = peers.new_request(kind=PeerKind.POLL, sid=sid, method=method, body=body)
        timeout = self.poll_timeout if method == "GET" else self.forward_timeout
        if method == "GET":
            answer.on_abort(lambda: peers.send(peer, peers.new_request(
                kind=PeerKind.ABORT, sid=sid, method=str(request.id))))
        self.counters["forwarded"] += 1
        m.POLL_FORWARDED.labels(method.lower()).inc()
        try:
            reply = await peers.request(peer, request, timeout)
        except PeerUnavailable as exc:
            log.info("request for session %s not served by %s: %s", sid, owner, exc)
            answer.reply(engine_error(EngineError.UNKNOWN_SID))
            if method == "GET" and isinstance(exc, PeerConnectionLost):
                held = self.unanswered.setdefault(owner, [])
                if len(held) < UNANSWERED_MAX:
                    held.append((peer.instance, sid, request.id))
            return
        answer.reply(http.response(reply.status, reply.body,
                                   reply.content_type or "text/plain; charset=UTF-8"))

    async def _peer(self, gateway: str) -> Peer | None:
        if self.peers is None:
            return None
        peer = self.peers.peers.get(gateway)
        if peer is None:
            # A gateway that started a moment ago may not have heard of all peers yet.
            peer = await self.peers.find(gateway, FIND_WAIT)
        return peer

    def peer_connected(self, peer: Peer) -> None:
        """The connection to ``peer`` is up (again): the GETs failed here while it was down
        were given up by their clients; if it still holds them (it was frozen), it hears."""
        entries = self.unanswered.pop(peer.gateway, [])
        assert self.peers is not None
        aborted = 0
        for instance, sid, request_id in entries:
            if instance == peer.instance:  # a new instance holds nothing of the old one's
                self.peers.send(peer, self.peers.new_request(
                    kind=PeerKind.ABORT, sid=sid, method=str(request_id)))
                aborted += 1
        if aborted:
            log.info("gateway %s reachable again: %d GETs its clients gave up aborted there",
                     peer.gateway, aborted)

    # -- requests from peers -----------------------------------------------------------------
    def polled(self, client: Client, answer: Answer) -> None:
        """A GET of ``client`` (owned here) waits for data: through which gateway it came."""
        sid = client.conn.sid
        if isinstance(answer, RemoteAnswer):
            self.polled_via[sid] = (answer.gateway, answer.instance)
        else:
            self.polled_via.pop(sid, None)

    def forget(self, sid: str) -> None:
        self.polled_via.pop(sid, None)

    def peer_lost(self, gateway: str, instance: str) -> None:
        """A peer gateway died (or was replaced): the polls it was holding here died too,
        and so did the answers it was passing on: sessions whose last GET it forwarded, with
        none waiting since, lost that answer and were given up by their clients."""
        count = self.remote.abort_from(gateway, instance)
        via = (gateway, instance)
        for sid in [sid for sid, relay in self.polled_via.items() if relay == via]:
            client = self.local.sessions.get(sid)
            del self.polled_via[sid]
            if client is not None and client.responder is None and client.polling is not None:
                self.local.abandoned(client)
                count += 1
        if count:
            log.info("gateway %s lost: %d sessions whose poll it relayed end", gateway, count)

    def on_peer_request(self, identity: bytes, request: PeerRequest) -> None:
        if request.kind is PeerKind.POLL:
            self.local.poll(request.sid, request.method, request.body,
                            self.remote.answer(identity, request.id, request.gateway,
                                               request.instance))
        elif request.kind is PeerKind.ABORT:
            if request.method.isdigit():
                self.remote.abort(request.gateway, request.instance, int(request.method))
        elif request.kind is PeerKind.CLAIM:
            self.remote.send(identity, self._hand_over(request), request.gateway,
                             request.instance)

    def _hand_over(self, request: PeerRequest) -> PeerReply:
        """Another gateway got this session's WebSocket: move the session there if nobody
        connected a namespace on it yet, else keep it (the upgrade will be refused)."""
        client = self.local.sessions.get(request.sid)
        if client is None:
            return PeerReply(request.id, 400 if request.sid not in self.moved else 409)
        polling = client.polling
        if (polling is None or polling.state is not UpgradeState.NONE or not polling.holding
                or client.conn.eio != 4 or client.sockets or client.conn.namespaces
                or client.conn.pending or client.conn.closed):
            return PeerReply(request.id, 409)
        queued, held = polling.export()
        queued.extend(client.conn.data_to_send())
        responder = client.take_responder()
        if responder is not None:
            responder.respond("6")  # the client polls again, and is relayed to the new owner
        handover = Handover(request.sid, client.address, dict(client.headers), queued, held)
        self.local.give_up(client)
        self._moved(request.sid, request.gateway)
        self.counters["handovers"] += 1
        m.HANDOVERS.labels("out").inc()
        log.info("session %s handed over to %s", request.sid, request.gateway)
        return PeerReply(request.id, 200, handover=handover)

    def _moved(self, sid: str, gateway: str) -> None:
        now = time.monotonic()
        self.moved[sid] = (gateway, now + MOVED_TTL)
        if len(self.moved) > MOVED_MAX or len(self.moved) % 1000 == 0:
            for key, (_, until) in list(self.moved.items()):
                if until < now or len(self.moved) > MOVED_MAX:
                    del self.moved[key]

    # -- claims ------------------------------------------------------------------------------
    def claim(self, sid: str, upgrade: Upgrade, handshake: bytes) -> None:
        """A WebSocket for a session owned elsewhere reached us."""
        owner = self.owner(sid)
        if owner is None or sid in self.claims:
            upgrade.refuse(engine_error(EngineError.UNKNOWN_SID))
            return
        self.spawn(self._claim(owner, sid, upgrade, handshake))

    async def _claim(self, owner: str, sid: str, upgrade: Upgrade, handshake: bytes) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.claims[sid] = done
        try:
            peer = await self._peer(owner)
            if peer is None:
                upgrade.refuse(engine_error(EngineError.UNKNOWN_SID))
                return
            assert self.peers is not None
            try:
                reply = await self.peers.request(
                    peer, self.peers.new_request(kind=PeerKind.CLAIM, sid=sid),
                    self.forward_timeout)
            except PeerUnavailable:
                upgrade.refuse(engine_error(EngineError.UNKNOWN_SID))
                return
            if reply.status == 400 or (reply.status == 200 and reply.handover is None):
                upgrade.refuse(engine_error(EngineError.UNKNOWN_SID))
                return
            if reply.status != 200 or reply.handover is None:
                self.local.refuse_probe(upgrade)
                return
            client = self.local.take_over(reply.handover)
            self.counters["handovers"] += 1
            m.HANDOVERS.labels("in").inc()
            if upgrade.open:  # else the WebSocket went away meanwhile: it polls on here
                self.local.probe(client, upgrade, handshake)
        finally:
            del self.claims[sid]
            done.set_result(None)
