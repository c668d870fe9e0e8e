"""The Engine.IO endpoint (``/socket.io/``): handshakes, long-polling, the upgrade, and the
sessions other gateways own.

Every session belongs to the gateway whose id its sid starts with (``<gateway>.<random>``).
A request for a session owned here is served here; one for a session another gateway
owns is forwarded to it over the peer sockets (:mod:`gateway.peers`) and its answer
relayed, so a balancer may send any request anywhere. A WebSocket upgrade that reaches
another gateway *claims* the session: while nobody has connected a namespace on it (its
Socket.IO packets are held a moment after the handshake, ``--upgrade-hold``), the session
moves to the gateway that has the WebSocket, which then owns it for the rest of its life;
requests still addressed to the old owner are relayed by it for a while (``moved``).
Sessions that already carry sockets stay put and their upgrade is refused, so they keep
polling. ``docs/polling.md`` has the whole design and its costs.

The Socket.IO side (namespaces, events, fan-out) is the :class:`SessionHost`'s; this
module only moves Engine.IO packets between HTTP requests, WebSockets and sessions.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from switchboard.gateway import http
from switchboard.gateway import metrics as m
from switchboard.gateway.client import Client
from switchboard.gateway.http import (
    CorsPolicy,
    EngineError,
    EngineQuery,
    HttpResponse,
    engine_error,
)
from switchboard.gateway.httpconn import Exchange, Upgrade
from switchboard.gateway.peers import Peer, Peers, PeerUnavailable
from switchboard.gateway.protocol.engineio import decode_payload
from switchboard.gateway.protocol.errors import (
    DecodeError,
    PollOverlap,
    TransportMismatch,
    UpgradeRefused,
)
from switchboard.gateway.protocol.polling import Polling, UpgradeState
from switchboard.gateway.transport import WsTransport, handshake
from switchboard.shared import topics
from switchboard.shared.envelope import Handover, PeerKind, PeerReply, PeerRequest

log = logging.getLogger("switchboard.gateway.engine")

POLL_TYPE = "text/plain; charset=UTF-8"
OK = b"ok"
#: How long a gateway relays requests for a session that moved to another gateway.
MOVED_TTL = 120.0
MOVED_MAX = 100_000


class SessionHost(Protocol):
    """What the engine needs from the Socket.IO side (:class:`gateway.server.Gateway`)."""

    def new_session(self, sid: str, address: str, headers: dict[str, str], *,
                    link: WsTransport | None = None, polling: Polling | None = None,
                    send_open: bool = True) -> Client:
        """Create, register and start a session (its OPEN is queued unless ``send_open``
        is false: a session handed over from another gateway)."""
        ...

    def on_message(self, client: Client, message: str | bytes) -> None:
        """One Engine.IO packet from the client."""
        ...

    def client_lost(self, client: Client, reason: str) -> None:
        """The session's transport is gone (idempotent)."""
        ...

    def bad_input(self, client: Client, reason: str, code: int) -> None:
        """The client broke the protocol: close it."""
        ...

    def forget(self, client: Client) -> None:
        """The session moved to another gateway: drop it without departures."""
        ...

    def forwarded_headers(self, request: http.HttpRequest) -> dict[str, str]:
        """The handshake headers a session keeps (for the services' CONNECT stages)."""
        ...

    def upgraded(self, client: Client) -> None:
        """The session's transport became WebSocket (its sockets' sessions say so)."""
        ...

    def rearm(self, client: Client) -> None:
        """Schedule the session's timer for its next deadline (the hold's end included);
        the timer calls :meth:`Engine.release_due`."""
        ...

    @property
    def stopping(self) -> bool: ...


@dataclass(frozen=True)
class EngineConfig:
    max_payload: int = 1_000_000
    max_packets: int = 16
    upgrade_hold: float = 0.3
    upgrade_timeout: float = 10.0
    forward_timeout: float = 5.0
    poll_timeout: float = 50.0
    write_limit: int = 1_048_576


class LocalAnswer:
    """Answers to one HTTP exchange of this gateway, with its CORS headers."""

    __slots__ = ("cors", "exchange")

    def __init__(self, exchange: Exchange, cors: tuple[tuple[str, str], ...]) -> None:
        self.exchange = exchange
        self.cors = cors

    def respond(self, body: str) -> None:
        self.exchange.respond(HttpResponse(200, body=body.encode(), head=_poll_head(self.cors)))

    def reply(self, response: HttpResponse) -> None:
        self.exchange.respond(response.with_headers(self.cors))

    def on_abort(self, callback: Callable[[], None]) -> None:
        self.exchange.on_abort = callback


class RemoteAnswer:
    """Answers to a request another gateway forwarded (it adds the headers)."""

    __slots__ = ("engine", "identity", "request_id")

    def __init__(self, engine: Engine, identity: bytes, request_id: int) -> None:
        self.engine = engine
        self.identity = identity
        self.request_id = request_id

    def respond(self, body: str) -> None:
        self.engine.remote_answered(self)
        self.engine.peer_reply(self.identity, PeerReply(self.request_id, 200, body.encode(),
                                                        POLL_TYPE))

    def reply(self, response: HttpResponse) -> None:
        self.engine.remote_answered(self)
        self.engine.peer_reply(self.identity, PeerReply(
            self.request_id, response.status, response.body,
            response.header("Content-Type") or ""))

    def on_abort(self, callback: Callable[[], None]) -> None:
        self.engine.remote_waiting(self, callback)


Answer = LocalAnswer | RemoteAnswer


#: The headers of a 200 poll answer, serialized once per CORS header set (bounded).
_POLL_HEADS: dict[tuple[tuple[str, str], ...], bytes] = {}


def _poll_head(cors: tuple[tuple[str, str], ...]) -> bytes:
    head = _POLL_HEADS.get(cors)
    if head is None:
        head = http.prepared(200, (("Content-Type", POLL_TYPE), ("Cache-Control", "no-store"),
                                   *http.SECURITY_HEADERS, *cors))
        if len(_POLL_HEADS) < 1000:
            _POLL_HEADS[cors] = head
    return head


def _bare(status: int) -> HttpResponse:
    return http.response(status, b"", "text/plain; charset=UTF-8")


class Engine:
    def __init__(self, gateway_id: str, config: EngineConfig, host: SessionHost,
                 cors: CorsPolicy, peers: Peers | None = None) -> None:
        self.id = gateway_id
        self.config = config
        self.host = host
        self.cors = cors
        self.peers = peers
        #: Sessions owned here, by Engine.IO sid.
        self.sessions: dict[str, Client] = {}
        #: Sessions that moved to another gateway: sid → (that gateway, until when).
        self.moved: dict[str, tuple[str, float]] = {}
        #: Claims under way from here: requests relayed meanwhile wait for them.
        self._claims: dict[str, asyncio.Future[None]] = {}
        #: Forwarded GETs waiting here, so that an ABORT finds them.
        self._remote: dict[tuple[bytes, int], Callable[[], None]] = {}
        self.counters = {"forwarded": 0, "relayed": 0, "handovers": 0, "upgrades": 0}
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- HTTP ------------------------------------------------------------------------------
    def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS":
            exchange.respond(self.cors.preflight(request))
            return
        if not self.cors.allows(origin):
            exchange.respond(engine_error(EngineError.FORBIDDEN))
            return
        answer = LocalAnswer(exchange, self.cors.headers(origin))
        query = EngineQuery.of(request.params())
        error = http.check_engine_request(query, request.method, upgrade=False)
        if error is not None:
            answer.reply(engine_error(error))
            return
        if query.sid is None:
            if self.host.stopping:
                answer.reply(http.json_response(503, {"error": "shutting down"}))
                return
            self._open_polling(exchange, answer)
            return
        self.poll(query.sid, request.method, request.body, answer)

    def _open_polling(self, exchange: Exchange, answer: LocalAnswer) -> None:
        request = exchange.request
        polling = Polling(
            self.config.max_packets,
            hold=self.config.upgrade_hold if self.peers is not None and self.peers.count else 0,
        )
        client = self.host.new_session(self.new_sid(), exchange.address,
                                       self.host.forwarded_headers(request), polling=polling)
        self._own(client)
        body = polling.get()
        assert body is not None  # the OPEN packet is queued
        answer.respond(body)

    def new_sid(self) -> str:
        return f"{self.id}.{secrets.token_urlsafe(15)}"

    def _own(self, client: Client) -> None:
        self.sessions[client.conn.sid] = client
        client.on_finished = self._finished

    def _finished(self, client: Client) -> None:
        if self.sessions.get(client.conn.sid) is client:
            del self.sessions[client.conn.sid]
        self.host.client_lost(client, "transport close")

    def waiting(self) -> int:
        """Long-polling GETs waiting for data here."""
        return sum(1 for client in self.sessions.values() if client.responder is not None)

    def forget_session(self, client: Client) -> None:
        """The host dropped the session (closed, lost): its sid is unknown from now on."""
        if self.sessions.get(client.conn.sid) is client:
            del self.sessions[client.conn.sid]

    # -- polling requests ------------------------------------------------------------------
    def poll(self, sid: str, method: str, body: bytes, answer: Answer) -> None:
        """A polling GET/POST for ``sid``, from here or forwarded: serve or pass it on."""
        client = self.sessions.get(sid)
        if client is not None:
            self._serve(client, method, body, answer)
            return
        claim = self._claims.get(sid)
        if claim is not None:  # a relayed request overtook our claim's answer: wait for it
            self._spawn(self._after_claim(claim, sid, method, body, answer))
            return
        moved = self.moved.get(sid)
        owner = moved[0] if moved is not None else self._owner_of(sid)
        if owner is None or owner == self.id or (isinstance(answer, RemoteAnswer) and \
                moved is None):
            answer.reply(engine_error(EngineError.UNKNOWN_SID))
            return
        if moved is not None:
            self.counters["relayed"] += 1
        self._spawn(self._forward(owner, sid, method, body, answer))

    async def _after_claim(self, claim: asyncio.Future[None], sid: str, method: str,
                           body: bytes, answer: Answer) -> None:
        await asyncio.wait([claim], timeout=self.config.forward_timeout)
        client = self.sessions.get(sid)
        if client is None:
            answer.reply(engine_error(EngineError.UNKNOWN_SID))
        else:
            self._serve(client, method, body, answer)

    def _owner_of(self, sid: str) -> str | None:
        try:
            return topics.gateway_of(sid)
        except ValueError:
            return None

    def _serve(self, client: Client, method: str, body: bytes, answer: Answer) -> None:
        polling = client.polling
        if polling is None:
            answer.reply(engine_error(EngineError.BAD_REQUEST))  # upgraded: not polling
            return
        if method == "GET":
            self._get(client, polling, answer)
        elif method == "POST":
            self._post(client, polling, body, answer)
        else:
            answer.reply(engine_error(EngineError.BAD_REQUEST))

    def _get(self, client: Client, polling: Polling, answer: Answer) -> None:
        try:
            body = polling.get()
        except PollOverlap as exc:
            answer.reply(_bare(400))
            self.host.bad_input(client, exc.reason, 1002)
            return
        except TransportMismatch:
            answer.reply(engine_error(EngineError.BAD_REQUEST))
            return
        if body is not None:
            answer.respond(body)
            if polling.finished:
                client.finish()
            return
        client.wait_poll(answer)
        answer.on_abort(lambda: self._poll_abandoned(client, answer))

    def _poll_abandoned(self, client: Client, answer: Answer) -> None:
        if client.responder is answer and client.polling is not None:
            client.responder = None
            client.polling.abandon()
            # The reference server ends the session too: a client whose poll went away
            # without an answer is gone (or will find its session closed and reconnect).
            self.host.client_lost(client, "transport close")

    def _post(self, client: Client, polling: Polling, body: bytes, answer: Answer) -> None:
        try:
            text = body.decode("utf-8")
            packets = polling.post(decode_payload(text), asyncio.get_running_loop().time())
        except (UnicodeDecodeError, DecodeError) as exc:
            reason = exc.reason if isinstance(exc, DecodeError) else "invalid UTF-8 in a payload"
            answer.reply(engine_error(EngineError.BAD_REQUEST))
            self.host.bad_input(client, reason, 1002)
            return
        except TransportMismatch:
            answer.reply(engine_error(EngineError.BAD_REQUEST))
            return
        for packet in packets:
            if client.conn.closed:
                break
            self.host.on_message(client, packet)
            if client.conn.closed and packet != "1":
                # The packet broke the protocol (the session is closed for it): the sender
                # is told plainly rather than with an "ok".
                answer.reply(engine_error(EngineError.BAD_REQUEST))
                return
        if polling.holding and polling.next_deadline() is not None:
            self.host.rearm(client)  # its timer now also covers the hold's end
        # Backpressure: a client with too much in flight gets its "ok" later, and engine.io
        # clients send nothing more until they have it.
        client.when_readable(lambda: answer.reply(http.response(200, OK, "text/html")))

    def release_due(self, client: Client) -> None:
        """Timer: the hold is over; hand the held packets to the session."""
        polling = client.polling
        if polling is None or not polling.holding:
            return
        deadline = polling.next_deadline()
        # Event-loop timers may fire a little early (uvloop's are in milliseconds).
        if deadline is not None and asyncio.get_running_loop().time() >= deadline - 0.002:
            self._release(client, polling)

    def _release(self, client: Client, polling: Polling) -> None:
        for packet in polling.release():
            if client.conn.closed:
                break
            self.host.on_message(client, packet)

    # -- forwarding ------------------------------------------------------------------------
    async def _forward(self, owner: str, sid: str, method: str, body: bytes,
                       answer: Answer) -> None:
        peer = await self._peer(owner)
        if peer is None:
            answer.reply(engine_error(EngineError.UNKNOWN_SID))
            return
        assert self.peers is not None
        request = self.peers.new_request(kind=PeerKind.POLL, sid=sid, method=method, body=body)
        timeout = self.config.poll_timeout if method == "GET" else self.config.forward_timeout
        if method == "GET":
            peers = self.peers
            answer.on_abort(lambda: peers.send(peer, peers.new_request(
                kind=PeerKind.ABORT, sid=sid, method=str(request.id))))
        self.counters["forwarded"] += 1
        m.POLL_FORWARDED.labels(method.lower()).inc()
        try:
            reply = await self.peers.request(peer, request, timeout)
        except PeerUnavailable as exc:
            log.info("request for session %s not served by %s: %s", sid, owner, exc)
            answer.reply(engine_error(EngineError.UNKNOWN_SID))
            return
        answer.reply(http.response(reply.status, reply.body,
                                   reply.content_type or "text/plain; charset=UTF-8"))

    async def _peer(self, gateway: str) -> Peer | None:
        if self.peers is None:
            return None
        peer = self.peers.peers.get(gateway)
        if peer is None:
            # A gateway that started a moment ago may not have heard of all peers yet.
            peer = await self.peers.find(gateway, 2.5)
        return peer

    # -- peer requests in ------------------------------------------------------------------
    def on_peer_request(self, identity: bytes, request: PeerRequest) -> None:
        if request.kind is PeerKind.POLL:
            self.poll(request.sid, request.method, request.body,
                      RemoteAnswer(self, identity, request.id))
        elif request.kind is PeerKind.ABORT:
            with_id = request.method
            callback = self._remote.pop((identity, int(with_id)), None) if \
                with_id.isdigit() else None
            if callback is not None:
                callback()
        elif request.kind is PeerKind.CLAIM:
            self.peer_reply(identity, self._hand_over(request))

    def peer_reply(self, identity: bytes, reply: PeerReply) -> None:
        if self.peers is not None:
            self.peers.reply(identity, reply)

    def remote_waiting(self, answer: RemoteAnswer, callback: Callable[[], None]) -> None:
        self._remote[(answer.identity, answer.request_id)] = callback

    def remote_answered(self, answer: RemoteAnswer) -> None:
        self._remote.pop((answer.identity, answer.request_id), None)

    def _hand_over(self, request: PeerRequest) -> PeerReply:
        """Another gateway got this session's WebSocket: move the session there if nobody
        connected a namespace on it yet, else keep it (the upgrade will be refused)."""
        client = self.sessions.get(request.sid)
        if client is None:
            return PeerReply(request.id, 400 if request.sid not in self.moved else 409)
        polling = client.polling
        if (polling is None or polling.state is not UpgradeState.NONE or not polling.holding
                or client.sockets or client.conn.namespaces or client.conn.pending
                or client.conn.closed):
            return PeerReply(request.id, 409)
        queued, held = polling.export()
        queued.extend(client.conn.data_to_send())
        responder, client.responder = client.responder, None
        if responder is not None:
            responder.respond("6")  # the client polls again, and is relayed to the new owner
        handover = Handover(request.sid, client.address, dict(client.headers), queued, held)
        del self.sessions[request.sid]
        client.on_finished = None
        self.host.forget(client)
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

    # -- WebSocket handshakes --------------------------------------------------------------
    def upgrade(self, upgrade: Upgrade) -> None:
        request = upgrade.request
        origin = request.headers.get("Origin")
        if not self.cors.allows(origin):
            upgrade.refuse(engine_error(EngineError.FORBIDDEN))
            return
        query = EngineQuery.of(request.params())
        if query.transport != "websocket":
            upgrade.refuse(engine_error(EngineError.UNKNOWN_TRANSPORT if query.transport
                                        not in http.TRANSPORTS else EngineError.BAD_REQUEST))
            return
        error = http.check_engine_request(query, "GET", upgrade=True)
        if error is not None:
            upgrade.refuse(engine_error(error))
            return
        ok, handshake_bytes = handshake(request)
        if not ok:
            upgrade.refuse(HttpResponse(400, (("Content-Type", "text/plain"),),
                                        b"Failed to open a WebSocket connection.\n"))
            return
        if query.sid is None:
            if self.host.stopping:
                upgrade.refuse(http.json_response(503, {"error": "shutting down"}))
                return
            link = WsTransport(self.config.max_payload)
            headers = self.host.forwarded_headers(request)

            def ready() -> None:
                client = self.host.new_session(self.new_sid(), upgrade.address, headers,
                                               link=link)
                self._own(client)

            upgrade.accept(link, handshake_bytes, ready)
            return
        sid = query.sid
        client = self.sessions.get(sid)
        if client is not None:
            self._probe(client, upgrade, handshake_bytes)
            return
        owner = self.moved[sid][0] if sid in self.moved else self._owner_of(sid)
        if owner is None or owner == self.id or sid in self._claims:
            upgrade.refuse(engine_error(EngineError.UNKNOWN_SID))
            return
        self._spawn(self._claim(owner, sid, upgrade, handshake_bytes))

    async def _claim(self, owner: str, sid: str, upgrade: Upgrade, handshake_bytes: bytes) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._claims[sid] = done
        try:
            peer = await self._peer(owner)
            if peer is None:
                upgrade.refuse(engine_error(EngineError.UNKNOWN_SID))
                return
            assert self.peers is not None
            try:
                reply = await self.peers.request(
                    peer, self.peers.new_request(kind=PeerKind.CLAIM, sid=sid),
                    self.config.forward_timeout)
            except PeerUnavailable:
                upgrade.refuse(engine_error(EngineError.UNKNOWN_SID))
                return
            if reply.status == 400 or (reply.status == 200 and reply.handover is None):
                upgrade.refuse(engine_error(EngineError.UNKNOWN_SID))
                return
            if reply.status != 200 or reply.handover is None:
                self._refuse_after_handshake(upgrade, handshake_bytes)
                return
            client = self._take_over(reply.handover)
            if not upgrade.open:
                return  # the WebSocket went away meanwhile; the session polls on here
            self._probe(client, upgrade, handshake_bytes)
        finally:
            del self._claims[sid]
            done.set_result(None)

    def _take_over(self, handover: Handover) -> Client:
        polling = Polling(self.config.max_packets)
        client = self.host.new_session(handover.sid, handover.address, dict(handover.headers),
                                       polling=polling, send_open=False)
        self._own(client)
        client.queue(list(handover.queued))
        for packet in handover.held:
            if client.conn.closed:
                break
            self.host.on_message(client, packet)
        self.counters["handovers"] += 1
        m.HANDOVERS.labels("in").inc()
        log.info("session %s taken over (its WebSocket is here)", handover.sid)
        return client

    def _refuse_after_handshake(self, upgrade: Upgrade, handshake_bytes: bytes) -> None:
        """As the reference server does for a session that cannot upgrade now: complete the
        WebSocket handshake, then close it (an HTTP error would be an error event in some
        clients, not a failed probe)."""
        link = WsTransport(self.config.max_payload)
        upgrade.accept(link, handshake_bytes)
        link.close(1008, "upgrade refused")

    def _probe(self, client: Client, upgrade: Upgrade, handshake_bytes: bytes) -> None:
        polling = client.polling
        try:
            if polling is None:
                raise UpgradeRefused("already a WebSocket session")
            polling.probe_opened()
        except UpgradeRefused:
            self._refuse_after_handshake(upgrade, handshake_bytes)
            return
        if polling.holding:
            self._release(client, polling)  # the session stays here: connect it now
        link = WsTransport(self.config.max_payload)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.config.upgrade_timeout, self._probe_failed, client,
                                polling, link, "upgrade timeout")

        def on_message(message: str | bytes) -> None:
            try:
                reply = polling.probe_received(message)
            except UpgradeRefused as exc:
                timer.cancel()
                self._probe_failed(client, polling, link, exc.reason)
                return
            if reply is not None:
                link.send_text(reply)
                client.answer_poll()  # the paused poll gets a NOOP
                return
            timer.cancel()
            self._upgraded(client, polling, link)

        def on_end(reason: str) -> None:
            timer.cancel()
            self._probe_failed(client, polling, link, reason)

        def ready() -> None:
            link.on_message = on_message
            link.on_end = on_end
            link.on_bad = lambda reason, code: on_end(reason)

        upgrade.accept(link, handshake_bytes, ready)

    def _probe_failed(self, client: Client, polling: Polling, link: WsTransport,
                      reason: str) -> None:
        if polling.state in (UpgradeState.PROBING, UpgradeState.PROBED):
            log.info("upgrade of %s failed: %s; it stays on polling", client.conn.sid, reason)
            polling.probe_failed()
            m.UPGRADES.labels("failed").inc()
        link.on_message = lambda _m: None
        link.on_end = lambda _r: None
        link.close(1008 if reason != "transport close" else 1000, "upgrade failed")

    def _upgraded(self, client: Client, polling: Polling, link: WsTransport) -> None:
        packets = polling.take_all()
        client.answer_poll()  # a poll still waiting is released with a NOOP
        client.polling = None
        client.attach(link, self.host)
        if packets:
            client.send_frames(packets)
        client.flush()
        self.host.upgraded(client)
        self.counters["upgrades"] += 1
        m.UPGRADES.labels("completed").inc()
        m.TRANSPORT_CONNECTIONS.labels("polling").dec()
        m.TRANSPORT_CONNECTIONS.labels("websocket").inc()
