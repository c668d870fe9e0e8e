"""The Engine.IO endpoint (``/socket.io/``): handshakes, long-polling requests, and the
WebSocket upgrade.

Every session belongs to the gateway whose id its sid starts with (``<gateway>.<random>``).
A request for a session owned here is served here (:meth:`Engine.serve`); one for a session
another gateway owns goes to it (:mod:`.relay`), so a balancer may send any request
anywhere. A WebSocket with the sid of a session owned here probes and upgrades it
(:mod:`.upgrade`); one for a session owned elsewhere claims the session for this gateway,
which succeeds while nobody has connected a namespace on it: a new polling session's
Socket.IO packets are *held* a moment (``--upgrade-hold``) so that its WebSocket can take it
along. ``docs/polling.md`` has the whole design and its costs.

The Socket.IO side (namespaces, events, fan-out) is the :class:`SessionHost`'s; this
module only moves Engine.IO packets between HTTP requests, WebSockets and sessions.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from switchboard.gateway import http, upgrade
from switchboard.gateway.answers import Answer, LocalAnswer, RemoteAnswer
from switchboard.gateway.client import Client
from switchboard.gateway.exchange import Exchange, Upgrade
from switchboard.gateway.http import (
    CorsPolicy,
    EngineError,
    EngineQuery,
    HttpResponse,
    engine_error,
)
from switchboard.gateway.peers import Peers
from switchboard.gateway.protocol.engineio import decode_payload, decode_payload_v3
from switchboard.gateway.protocol.errors import DecodeError, PollOverlap, TransportMismatch
from switchboard.gateway.protocol.polling import Polling
from switchboard.gateway.relay import Relay
from switchboard.gateway.transport import WsTransport, handshake
from switchboard.shared.envelope import Handover, PeerRequest

log = logging.getLogger("switchboard.gateway.engine")

OK = b"ok"


class SessionHost(Protocol):
    """What the engine needs from the Socket.IO side (:class:`gateway.server.Gateway`)."""

    def new_session(self, sid: str, address: str, headers: dict[str, str], *,
                    link: WsTransport | None = None, polling: Polling | None = None,
                    send_open: bool = True, eio: int = 4,
                    auth: dict[str, str] | None = None) -> Client:
        """Create, register and start a session (its OPEN is queued unless ``send_open``
        is false: a session handed over from another gateway). ``eio`` 3: a v2 client,
        connected to ``/`` at once with ``auth`` (its handshake's query)."""
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
        """Schedule the session's timer for its next deadline (the hold's end included)."""
        ...

    def release_held(self, client: Client) -> None:
        """Hand the packets a polling session held (during an upgrade's hold) to it."""
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
    #: Engine.IO v3 clients (Socket.IO v2) too, as Node's ``allowEIO3``.
    allow_eio3: bool = False


def _revision(params: dict[str, str]) -> tuple[int, dict[str, str] | None]:
    """A handshake's Engine.IO revision and, for v3, the auth of its automatic CONNECT to
    ``/``: the query's own parameters (a v2 client's ``query`` option; the v4 protocol
    carries auth in the CONNECT packet instead)."""
    if params.get("EIO") != "3":
        return 4, None
    return 3, {k: v for k, v in params.items() if k not in http.ENGINE_PARAMS}


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
        self._tasks: set[asyncio.Task[None]] = set()
        self.relay = Relay(gateway_id, peers, self, config.forward_timeout,
                           config.poll_timeout, self._spawn)
        self.upgrades = 0

    @property
    def counters(self) -> dict[str, int]:
        return {**self.relay.counters, "upgrades": self.upgrades}

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- HTTP ------------------------------------------------------------------------------
    def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        if request.method == "OPTIONS":
            exchange.respond(self.cors.preflight(request))
            return
        if not self.cors.allows(request):
            exchange.respond(engine_error(EngineError.FORBIDDEN))
            return
        answer = LocalAnswer(exchange, self.cors.headers(request))
        params = request.params()
        query = EngineQuery.of(params)
        error = http.check_engine_request(query, request.method, upgrade=False,
                                          allow_eio3=self.config.allow_eio3)
        if error is not None:
            answer.reply(engine_error(error))
            return
        if query.sid is None:
            if self.host.stopping:
                answer.reply(http.json_response(503, {"error": "shutting down"}))
                return
            self._open_polling(exchange, answer, params)
            return
        self.poll(query.sid, request.method, request.body, answer)

    def _open_polling(self, exchange: Exchange, answer: LocalAnswer,
                      params: dict[str, str]) -> None:
        request = exchange.request
        eio, auth = _revision(params)
        if eio == 3 and "j" in params:
            answer.reply(engine_error(EngineError.BAD_REQUEST))  # JSONP: not served
            return
        polling = Polling(
            self.config.max_packets,
            # A v3 session is never handed over (docs/polling.md): nothing to hold for.
            hold=self.config.upgrade_hold if self.peers is not None and self.peers.count
            and eio == 4 else 0,
            eio=eio,
        )
        client = self.host.new_session(self.new_sid(), exchange.address,
                                       self.host.forwarded_headers(request), polling=polling,
                                       eio=eio, auth=auth)
        self._own(client)
        body = polling.get()
        assert body is not None  # the OPEN packet is queued
        answer.respond(body)

    def new_sid(self) -> str:
        return f"{self.id}.{secrets.token_urlsafe(15)}"

    def _own(self, client: Client) -> None:
        self.sessions[client.conn.sid] = client
        client.owned_by(self._finished)

    def _finished(self, client: Client) -> None:
        if self.sessions.get(client.conn.sid) is client:
            del self.sessions[client.conn.sid]
            self.relay.forget(client.conn.sid)
        self.host.client_lost(client, "transport close")

    def waiting(self) -> int:
        """Long-polling GETs waiting for data here."""
        return sum(1 for client in self.sessions.values() if client.responder is not None)

    def forget_session(self, client: Client) -> None:
        """Forget the session's sid (it is over, or it moved to another gateway)."""
        if self.sessions.get(client.conn.sid) is client:
            del self.sessions[client.conn.sid]
            self.relay.forget(client.conn.sid)

    def give_up(self, client: Client) -> None:
        """The session moved to another gateway (:mod:`.relay`)."""
        self.forget_session(client)
        client.owned_by(None)
        self.host.forget(client)

    def on_peer_request(self, identity: bytes, request: PeerRequest) -> None:
        self.relay.on_peer_request(identity, request)

    # -- polling requests ------------------------------------------------------------------
    def poll(self, sid: str, method: str, body: bytes, answer: Answer) -> None:
        """A polling GET/POST for ``sid``, from here or forwarded: serve or pass it on."""
        client = self.sessions.get(sid)
        if client is not None:
            self.serve(client, method, body, answer)
        else:
            self.relay.pass_on(sid, method, body, answer, isinstance(answer, RemoteAnswer))

    def serve(self, client: Client, method: str, body: bytes, answer: Answer) -> None:
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
        self.relay.polled(client, answer)
        if body is not None:
            answer.respond(body)
            if polling.finished:
                client.finish()
            return
        client.wait_poll(answer)
        answer.on_abort(lambda: self._poll_abandoned(client, answer))

    def _poll_abandoned(self, client: Client, answer: Answer) -> None:
        if client.responder is answer:
            self.abandoned(client)

    def abandoned(self, client: Client) -> None:
        """The client gave the session up (its poll failed or went away unanswered)."""
        if client.polling is not None:
            client.take_responder()  # gone unanswered
            client.polling.abandon()
            # The reference server ends the session too: a client whose poll went away
            # without an answer is gone (or will find its session closed and reconnect).
            self.host.client_lost(client, "transport close")

    def _post(self, client: Client, polling: Polling, body: bytes, answer: Answer) -> None:
        try:
            if client.conn.eio == 3:
                # A v3 client that can send binary frames its payload in binary (it starts
                # with a kind byte, 0 or 1; a text payload starts with a length digit).
                decoded = decode_payload_v3(
                    body if body[:1] in (b"\x00", b"\x01") else body.decode("utf-8"))
            else:
                decoded = decode_payload(body.decode("utf-8"))
            packets = polling.post(decoded, asyncio.get_running_loop().time())
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
        client.lane.when_readable(lambda: answer.reply(http.response(200, OK, "text/html")))

    # -- WebSocket handshakes --------------------------------------------------------------
    def upgrade(self, upgrade: Upgrade) -> None:
        request = upgrade.request
        if not self.cors.allows(request):
            upgrade.refuse(engine_error(EngineError.FORBIDDEN))
            return
        params = request.params()
        query = EngineQuery.of(params)
        if query.transport != "websocket":
            upgrade.refuse(engine_error(EngineError.UNKNOWN_TRANSPORT if query.transport
                                        not in http.TRANSPORTS else EngineError.BAD_REQUEST))
            return
        error = http.check_engine_request(query, "GET", upgrade=True,
                                          allow_eio3=self.config.allow_eio3)
        if error is not None:
            upgrade.refuse(engine_error(error))
            return
        ok, handshake_bytes = handshake(request)
        if not ok:
            upgrade.refuse(HttpResponse(400, (("Content-Type", "text/plain"),),
                                        b"Failed to open a WebSocket connection.\n"))
            return
        if query.sid is None:
            self._open_websocket(upgrade, handshake_bytes, params)
            return
        client = self.sessions.get(query.sid)
        if client is not None:
            self.probe(client, upgrade, handshake_bytes)
        else:
            self.relay.claim(query.sid, upgrade, handshake_bytes)

    def _open_websocket(self, upgrade: Upgrade, handshake_bytes: bytes,
                        params: dict[str, str]) -> None:
        if self.host.stopping:
            upgrade.refuse(http.json_response(503, {"error": "shutting down"}))
            return
        link = WsTransport(self.config.max_payload)
        headers = self.host.forwarded_headers(upgrade.request)
        eio, auth = _revision(params)

        def ready() -> None:
            self._own(self.host.new_session(self.new_sid(), upgrade.address, headers,
                                            link=link, eio=eio, auth=auth))

        upgrade.accept(link, handshake_bytes, ready)

    def probe(self, client: Client, upgrade_: Upgrade, handshake_bytes: bytes) -> None:
        upgrade.probe(client, upgrade_, handshake_bytes, self.host, self.config.max_payload,
                      self.config.upgrade_timeout, self.host.release_held, self._upgraded)

    def _upgraded(self, client: Client) -> None:
        self.upgrades += 1
        self.host.upgraded(client)

    def refuse_probe(self, upgrade_: Upgrade) -> None:
        upgrade.refuse_probe(upgrade_)

    def take_over(self, handover: Handover) -> Client:
        """Start a session another gateway handed over: what it queued for the client goes
        out from here, what it held from the client is handled here."""
        client = self.host.new_session(handover.sid, handover.address, dict(handover.headers),
                                       polling=Polling(self.config.max_packets),
                                       send_open=False)
        self._own(client)
        client.queue(list(handover.queued))
        for packet in handover.held:
            if client.conn.closed:
                break
            self.host.on_message(client, packet)
        log.info("session %s taken over (its WebSocket is here)", handover.sid)
        return client
