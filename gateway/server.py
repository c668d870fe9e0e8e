"""The gateway: client sessions, the CONNECT and EVENT pipelines, and local fan-out.

Decisions about sockets belong to services; this module only translates between clients
(through the sans-I/O :mod:`gateway.protocol`) and services (through :mod:`gateway.backbone`
and the broker's SUB stream), and keeps the local room index that fan-out needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import msgpack
import zmq
import zmq.asyncio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from switchboard.gateway import http, wsframe
from switchboard.gateway import metrics as m
from switchboard.gateway.backbone import Backbone
from switchboard.gateway.client import Client, CloseMode, Corker, Turn
from switchboard.gateway.config import GatewayConfig
from switchboard.gateway.echo import ENGINE_ECHO_PATH, EchoHost
from switchboard.gateway.engine import Engine, EngineConfig
from switchboard.gateway.fanout import ANY_NAMESPACE, LocalIndex, NsSocket, Subscriptions, wait_all
from switchboard.gateway.health import HealthFigures, HealthLimits, evaluate, rss_mb
from switchboard.gateway.http import CorsPolicy, HttpRequest, HttpResponse
from switchboard.gateway.httpconn import Exchange, HttpConnection, HttpLimits, Upgrade
from switchboard.gateway.peers import Peers
from switchboard.gateway.protocol import (
    AckReceived,
    Closed,
    Connection,
    ConnectionConfig,
    ConnectRequested,
    DisconnectRequested,
    Event,
    EventReceived,
    encode_event_frames,
)
from switchboard.gateway.protocol.polling import Polling
from switchboard.gateway.proxies import client_address, parse_networks
from switchboard.gateway.ratelimit import TokenBuckets, retry_after
from switchboard.gateway.transport import WsTransport
from switchboard.gateway.web import WebRoutes
from switchboard.shared import topics
from switchboard.shared.envelope import (
    Emit,
    GatewayStatus,
    PubKind,
    Publication,
    Reply,
    RequestKind,
    Session,
    SocketState,
)
from switchboard.shared.errors import EnvelopeError, ServiceUnavailable
from switchboard.shared.metrics import BoundedLabels
from switchboard.shared.publisher import ZmqPublisher

log = logging.getLogger("switchboard.gateway")

#: CONNECT refusal texts counted by name; anything else is "other" (bounded labels).
KNOWN_REFUSALS = (
    "Invalid namespace", "Authentication error: No token provided",
    "Authentication error: Invalid token", "Access denied: admin role required",
    "Rate limit exceeded", "Banned", "Service unavailable",
)

#: Handshake headers passed on to services (auth reads ``authorization``).
FORWARDED_HEADERS = ("authorization", "origin", "user-agent", "x-forwarded-for")
SUBSCRIBE_TIMEOUT = 2.0


def new_gateway_id() -> str:
    return "gw" + secrets.token_hex(4)


class Gateway:
    def __init__(self, config: GatewayConfig, context: zmq.asyncio.Context | None = None) -> None:
        self.config = config
        self.id = config.gateway_id or new_gateway_id()
        if "." in self.id:
            raise ValueError("gateway id may not contain '.' (socket ids use it)")
        self.context = context or zmq.asyncio.Context()
        #: Random per process start: the same ``id`` after a restart is a new process.
        self.instance = secrets.token_hex(8)
        self.started_at = time.time()
        self.conn_config = ConnectionConfig(
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            max_payload=config.max_payload,
            connect_timeout=config.connect_timeout,
        )
        self.cors = CorsPolicy(frozenset(config.allowed_origins), config.cors_credentials)
        self.trusted_proxies = parse_networks(config.trusted_proxies)
        self.http_limits = HttpLimits(
            max_body=config.max_http_buffer_size, head_timeout=config.http_header_timeout,
            body_timeout=config.http_body_timeout, keep_alive=config.http_keep_alive,
        )
        #: Announces this gateway's peer endpoint on the broker (see gateway.peers).
        self.publisher = ZmqPublisher(self.context, config.broker_pub, self.id)
        self.peers = Peers(self.id, self.instance, self.context, config.peer_bind,
                           config.peer_address, self._peer_request,
                           stale_after=max(10 * config.heartbeat_interval, 3.0))
        self.engine = Engine(self.id, EngineConfig(
            max_payload=config.max_payload,
            max_packets=config.polling_max_packets,
            upgrade_hold=config.upgrade_hold,
            upgrade_timeout=config.upgrade_timeout,
            forward_timeout=config.request_timeout,
            poll_timeout=config.ping_interval + config.ping_timeout + config.request_timeout,
            write_limit=config.write_limit,
        ), self, self.cors, self.peers)
        self.echo: Engine | None = None
        if config.engine_echo:
            echo_host = EchoHost(self.conn_config, config.write_limit)
            self.echo = Engine(self.id, replace(self.engine.config, upgrade_hold=0), echo_host,
                               self.cors)
            echo_host.engine = self.echo
        self.subs = Subscriptions(self.context, config.broker_sub, self._on_message)
        self.index = LocalIndex(self.subs)
        self.backbone = Backbone(
            self.id,
            config.service_endpoints(),
            self.context,
            config.request_timeout,
            status=self.status,
            on_restart=self.sync_service,
            liveness=config.heartbeat_liveness,
            instance=self.instance,
        )
        self.clients: set[Client] = set()
        self.corker = Corker()
        #: Sessions in their CONNECT pipeline, by socket id (reported in SYNC too).
        self.connecting: dict[str, Session] = {}
        self.counters = {"publications": 0, "deliveries": 0, "events": 0, "closed_bad_input": 0}
        self.broker_instance: str | None = None
        self.broker_missed = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._broker_beat = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.ready = asyncio.Event()
        self.stopping = False
        self.web = WebRoutes(config)
        self.health_limits = HealthLimits(
            config.max_connections_warning, config.max_memory_mb, config.max_error_rate
        )
        self.http_buckets = TokenBuckets(config.http_rate, 60.0)
        self.token_buckets = TokenBuckets(config.token_rate, 60.0)
        self.handshake_buckets = TokenBuckets(config.handshake_rate, 60.0)
        self.event_labels = BoundedLabels(limit=200)
        self.sent_labels = BoundedLabels(limit=200)
        #: Metric children by (received?, namespace, event): a label lookup per message
        #: costs more than the increment.
        self._meters: dict[tuple[bool, str, str], Any] = {}
        self.peak_connections = 0
        self.peak_sockets: dict[str, int] = {}
        self._publication_counters = {
            kind: m.PUBLICATIONS.labels(kind.name.lower()) for kind in PubKind
        }

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.subs.add(topics.gateway(self.id))
        self.subs.add(topics.BROKER_HEARTBEAT)
        self.subs.add(topics.ALL_GATEWAYS)
        self.subs.start()
        self.backbone.start()
        self.peers.start()
        try:
            await asyncio.wait_for(self._broker_beat.wait(), self.config.ready_timeout)
        except TimeoutError:
            log.warning("broker %s not reachable at start", self.config.broker_sub)
        await self.backbone.wait_described(self.config.ready_timeout)
        self._loops.append(
            asyncio.create_task(self.backbone.heartbeat_loop(self.config.heartbeat_interval))
        )
        self._loops.append(asyncio.create_task(self._broker_watch()))
        self._loops.append(asyncio.create_task(self._announce_loop()))
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: HttpConnection(self, self.http_limits), self.config.host, self.config.port,
            reuse_address=True, backlog=4096,
        )
        self.ready.set()
        log.info("gateway %s ready on ws://%s:%d%s", self.id, self.config.host,
                 self.config.port, http.ENGINE_PATH)

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, tell sockets, finish in-flight work, leave.

        Services hear every socket leave (DISCONNECT) before the process exits, so presence
        and room counts are right at once rather than after the heartbeat timeout.
        """
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_grace
        if self.server is not None:
            self.server.close()  # stop listening; connections stay until closed below
        log.info("gateway %s shutting down: %d connections", self.id, len(self.clients))
        for client in list(self.clients):
            for sock in list(client.sockets.values()):
                if sock.live and not client.conn.closed:
                    client.conn.send_event(sock.ns, "server shutdown", [
                        {"message": "This server is shutting down; reconnect to continue."}])
            client.flush()
        # In-flight requests (acks) finish; new events are still answered meanwhile.
        while any(c.busy for c in self.clients) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for client in list(self.clients):
            self._close_client(client, "server shutdown")
        for client in list(self.clients):
            client.close(1001, "server shutdown", CloseMode.GRACEFUL)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=max(deadline - loop.time(), 0.5))
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.backbone.close()
        self.subs.close()
        self.peers.close()
        self.publisher.close()
        log.info("gateway %s stopped", self.id)

    def status(self) -> GatewayStatus:
        return GatewayStatus(
            self.started_at,
            {ns: len(members) for ns, members in self.index.namespaces.items()},
            f"{self.config.host}:{self.config.port}",
        )

    def stats(self) -> dict[str, Any]:
        polling = sum(1 for c in self.clients if c.polling is not None)
        return {
            "gateway": self.id,
            "uptime": round(time.time() - self.started_at, 3),
            "connections": len(self.clients),
            "transports": {"websocket": len(self.clients) - polling, "polling": polling},
            "upgrades": self.engine.counters["upgrades"],
            "pollsForwarded": self.engine.counters["forwarded"],
            "pollsRelayed": self.engine.counters["relayed"],
            "handovers": self.engine.counters["handovers"],
            "pollsWaiting": self.engine.waiting() + (self.echo.waiting() if self.echo else 0),
            "peers": sorted(self.peers.peers),
            "namespaces": {ns: len(m) for ns, m in self.index.namespaces.items()},
            "rooms": len(self.index.rooms),
            "subscriptions": len(self.subs.counts),
            "publicationsReceived": self.counters["publications"],
            "deliveries": self.counters["deliveries"],
            "eventsReceived": self.counters["events"],
            "closedForBadInput": self.counters["closed_bad_input"],
            "services": {
                name: self.backbone.is_up(name) for name in self.backbone.endpoints
            },
            "broker": self.broker_missed < self.config.heartbeat_liveness,
        }

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def health(self) -> dict[str, Any]:
        failures, total = self.backbone.recent_outcomes()
        figures = HealthFigures(
            broker_up=self.broker_missed < self.config.heartbeat_liveness,
            services_up={name: self.backbone.is_up(name) for name in self.backbone.endpoints},
            connections=len(self.clients),
            rss_mb=rss_mb(),
            recent_requests=total,
            recent_failures=failures,
        )
        health = evaluate(figures, self.health_limits)
        if self.stopping:
            health.add("unhealthy", "shutting down")
        return {
            "status": health.status,
            "reasons": health.reasons,
            "gateway": self.id,
            "connections": figures.connections,
            "memoryMb": round(figures.rss_mb, 1),
            "broker": figures.broker_up,
            "services": figures.services_up,
            "httpStatus": health.http_status,
        }

    # -- HTTP (gateway.httpconn.HttpApp) -------------------------------------------------------
    def client_address(self, peer: str, request: HttpRequest) -> str:
        return client_address(peer, request.headers.get("X-Forwarded-For"), self.trusted_proxies)

    def handle(self, exchange: Exchange) -> None:
        request = exchange.request
        path = request.path
        now = time.monotonic()
        if self.echo is not None and path == ENGINE_ECHO_PATH:
            self.echo.handle(exchange)
            return
        if path in (http.ENGINE_PATH, http.ENGINE_PATH.rstrip("/")):
            if "sid=" not in request.query and request.method == "GET":
                wait = self.handshake_buckets.take(exchange.address, now)
                if wait:
                    exchange.respond(_too_many(wait))
                    return
            self.engine.handle(exchange)
            return
        buckets = self.token_buckets if path.startswith("/api/token") else self.http_buckets
        wait = buckets.take(exchange.address, now)
        if wait:
            m.HTTP_REQUESTS.labels("limited", "429").inc()
            exchange.respond(_too_many(wait))
            return
        response = self._route(path, request)
        m.HTTP_REQUESTS.labels(path if path in ("/health", "/stats", "/metrics") else "other",
                               str(response.status)).inc()
        exchange.respond(response)

    def upgrade(self, upgrade: Upgrade) -> None:
        request = upgrade.request
        if self.echo is not None and request.path == ENGINE_ECHO_PATH:
            self.echo.upgrade(upgrade)
            return
        if request.path not in (http.ENGINE_PATH, http.ENGINE_PATH.rstrip("/")):
            upgrade.refuse(http.json_response(404, {"error": "not found"}))
            return
        if "sid=" not in request.query:
            wait = self.handshake_buckets.take(upgrade.address, time.monotonic())
            if wait:
                upgrade.refuse(_too_many(wait))
                return
        self.engine.upgrade(upgrade)

    def _route(self, path: str, request: HttpRequest) -> HttpResponse:
        if path == "/stats":
            return http.json_response(200, self.stats())
        if path == "/health":
            doc = self.health()
            return http.json_response(doc.pop("httpStatus"), doc)
        if path == "/metrics":
            return http.response(200, generate_latest(), CONTENT_TYPE_LATEST)
        response = self.web.handle(path, request)
        if response is not None:
            return response
        return http.json_response(404, {"error": "not found"})

    # -- sessions (gateway.engine.SessionHost) -------------------------------------------------
    def forwarded_headers(self, request: HttpRequest) -> dict[str, str]:
        return {
            name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers
        }

    def new_session(self, sid: str, address: str, headers: dict[str, str], *,
                    link: WsTransport | None = None, polling: Polling | None = None,
                    send_open: bool = True) -> Client:
        """A handshake succeeded (or a session was handed over): start the session."""
        loop = asyncio.get_running_loop()
        upgrades = ("websocket",) if polling is not None else ()
        conn = Connection(sid, self.conn_config, loop.time(), upgrades, send_open)
        client = Client(conn, address, headers, self.config.write_limit, self._slow,
                        self.corker, polling=polling)
        if link is not None:
            client.attach(link, self)
        client.started = time.monotonic()
        self.clients.add(client)
        m.CONNECTIONS.inc()
        m.CONNECTIONS_TOTAL.inc()
        m.TRANSPORT_CONNECTIONS.labels(client.transport_name).inc()
        if send_open:
            m.TRANSPORT_OPENED.labels(client.transport_name).inc()
        if len(self.clients) > self.peak_connections:
            self.peak_connections = len(self.clients)
            m.CONNECTIONS_PEAK.set(self.peak_connections)
        client.flush()
        client.schedule(lambda: self._on_timer(client))
        return client

    def upgraded(self, client: Client) -> None:
        for sock in client.sockets.values():
            self._transport_changed(sock)

    def _transport_changed(self, sock: NsSocket) -> None:
        """Services that keep sockets hear of the new transport (the admin's socket list)."""
        transport = sock.client.transport_name
        if sock.session.transport == transport:
            return
        sock.session = replace(sock.session, transport=transport)
        for service in self.backbone.routing.update_listeners(sock.ns):
            self.spawn(self._update_request(service, sock.session))

    async def _update_request(self, service: str, session: Session) -> None:
        try:
            await self.backbone.request(service, RequestKind.UPDATE, session=session)
        except ServiceUnavailable as exc:
            log.info("UPDATE of %s not delivered to %s: %s", session.sid, service, exc)

    def rearm(self, client: Client) -> None:
        client.schedule(lambda: self._on_timer(client))

    def forget(self, client: Client) -> None:
        """The session moved to another gateway before any namespace was connected."""
        client.lost = True
        client.stop()
        self.clients.discard(client)
        m.CONNECTIONS.dec()
        m.TRANSPORT_CONNECTIONS.labels("polling").dec()

    def _peer_request(self, identity: bytes, request: Any) -> None:
        self.engine.on_peer_request(identity, request)

    def on_message(self, client: Client, message: str | bytes) -> None:
        conn = client.conn
        if conn.closed:
            return
        events = conn.receive_frame(message, asyncio.get_running_loop().time())
        if events:
            self._handle_events(client, events)
        client.flush()

    def bad_input(self, client: Client, reason: str, code: int) -> None:
        self.counters["closed_bad_input"] += 1
        log.info("closing connection %s from %s: %s", client.conn.sid, client.address, reason)
        m.CLOSES.labels("bad input").inc()
        if not client.conn.closed:
            client.conn.close(reason)
        self._forget_client(client)
        client.close(code, reason, CloseMode.ABORT)
        if client.polling is not None:
            self.client_lost(client, reason)

    def client_lost(self, client: Client, reason: str) -> None:
        """The connection is gone or closing (idempotent)."""
        if client.lost:
            return
        client.lost = True
        if not client.conn.closed:
            if reason.startswith(("message too large", "invalid WebSocket")):
                self.counters["closed_bad_input"] += 1
                log.info("closing connection %s from %s: %s", client.conn.sid, client.address,
                         reason)
            self._handle_events(client, client.conn.connection_lost(reason))
        self._forget_client(client)
        client.stop()
        if client.polling is not None and not client.polling.finished:
            client.close(1000, reason, CloseMode.ABORT)
        self.engine.forget_session(client)
        self.clients.discard(client)
        m.CONNECTIONS.dec()
        m.TRANSPORT_CONNECTIONS.labels(client.transport_name).dec()

    def _on_timer(self, client: Client) -> None:
        loop = asyncio.get_running_loop()
        self.engine.release_due(client)
        events = client.conn.tick(loop.time())
        if events:
            self._handle_events(client, events)
        client.flush()
        if not client.conn.closed:
            client.schedule(lambda: self._on_timer(client))

    def _event_meter(self, received: bool, ns: str, event: str) -> Any:
        key = (received, ns, event)
        meter = self._meters.get(key)
        if meter is None:  # label values are capped by BoundedLabels, this cache at 10,000
            if received:
                meter = m.EVENTS_RECEIVED.labels(ns, self.event_labels(event))
            else:
                meter = m.EVENTS_SENT.labels(ns, self.sent_labels(event))
            if len(self._meters) < 10_000:
                self._meters[key] = meter
        return meter

    def _handle_events(self, client: Client, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, EventReceived):
                self.counters["events"] += 1
                self._event_meter(True, event.namespace, event.event).inc()
                ev = event
                client.submit(lambda turn, ev=ev: self._event(client, ev, turn))  # type: ignore[misc]
            elif isinstance(event, ConnectRequested):
                cr = event
                client.submit(
                    lambda turn, cr=cr: self._connect(client, cr), barrier=True  # type: ignore[misc]
                )
            elif isinstance(event, DisconnectRequested):
                sock = client.sockets.get(event.namespace)
                if sock is not None:
                    self._drop_socket(sock)
            elif isinstance(event, AckReceived):
                ack = event
                client.submit(lambda turn, ack=ack: self._client_ack(client, ack, turn))  # type: ignore[misc]
            elif isinstance(event, Closed):
                self._on_closed(client, event)

    def _on_closed(self, client: Client, event: Closed) -> None:
        reason = event.reason
        if event.error:
            self.counters["closed_bad_input"] += 1
            log.info("closing connection %s from %s: %s", client.conn.sid, client.address, reason)
        m.CLOSES.labels(_bounded_reason(reason)).inc()
        self._forget_client(client)
        if event.error:
            mode = CloseMode.ABORT
        else:
            mode = CloseMode.CLIENT if reason == "client close" else CloseMode.GRACEFUL
        client.close(1002 if event.error else 1000, reason, mode)

    def _forget_client(self, client: Client) -> None:
        for sock in list(client.sockets.values()):
            self._drop_socket(sock)

    def _close_client(self, client: Client, reason: str) -> None:
        if not client.conn.closed:
            client.conn.close(reason)
            client.flush()
        self._forget_client(client)

    def _slow(self, client: Client) -> None:
        log.warning("disconnecting slow client %s (over %d bytes unsent)",
                    client.conn.sid, self.config.write_limit)
        m.CLOSES.labels("slow consumer").inc()
        if not client.conn.closed:
            client.conn.close("slow consumer")
        self._forget_client(client)
        # The close frame queues behind the unread data; the close timeout drops the TCP
        # connection if the client never reads it. A polling client's waiting poll (if any)
        # is told the session is over.
        client.close(1008, "slow consumer", CloseMode.ABORT)
        if client.polling is not None:
            self.client_lost(client, "slow consumer")

    # -- CONNECT pipeline ----------------------------------------------------------------------
    async def _connect(self, client: Client, request: ConnectRequested) -> None:
        ns = request.namespace
        conn = client.conn
        routing = self.backbone.routing
        if ns not in routing.namespaces:
            conn.refuse(ns, "Invalid namespace")
            client.flush()
            m.CONNECT_REFUSALS.labels("other", "Invalid namespace").inc()
            return
        session = Session(
            sid=f"{self.id}.{secrets.token_urlsafe(9)}",
            ns=ns,
            gateway=self.id,
            address=client.address,
            connected_at=time.time(),
            transport=client.transport_name,
        )
        joins: list[str] = []
        emits: list[Emit] = []
        accepted: list[str] = []
        refusal: str | None = None
        self.connecting[session.sid] = session
        try:
            for stage in routing.connect_stages(ns):
                try:
                    reply = await self.backbone.request(
                        stage, RequestKind.CONNECT, session=session,
                        auth=request.auth if isinstance(request.auth, dict) else {},
                        headers=client.headers,
                    )
                except ServiceUnavailable as exc:
                    log.warning("CONNECT to %s refused: %s", ns, exc)
                    refusal = "Service unavailable"
                    break
                if not reply.ok:
                    refusal = reply.error or "Connection refused"
                    break
                accepted.append(stage)
                if reply.session is not None:
                    session = reply.session
                    self.connecting[session.sid] = session
                joins.extend(reply.joins)
                emits.extend(reply.emits)
        finally:
            self.connecting.pop(session.sid, None)
        if refusal is not None or conn.closed:
            if not conn.closed:
                refusal = refusal or "Connection refused"
                conn.refuse(ns, refusal)
                client.flush()
                m.CONNECT_REFUSALS.labels(
                    ns, refusal if refusal in KNOWN_REFUSALS else "other").inc()
                log.info("CONNECT to %s from %s refused: %s", ns, client.address, refusal)
            self._notify_disconnect(session, [s for s in accepted
                                              if s in routing.disconnect_listeners(ns)])
            return
        sock = NsSocket(session, client)
        client.sockets[ns] = sock
        m.SOCKETS.labels(ns).inc()
        m.SOCKETS_TOTAL.labels(ns).inc()
        count = len(self.index.namespaces.get(ns, ())) + 1
        if count > self.peak_sockets.get(ns, 0):
            self.peak_sockets[ns] = count
            m.SOCKETS_PEAK.labels(ns).set(count)
        confirmations = [self.index.add(sock)]
        confirmations.extend(self.index.join(sock, room) for room in joins)
        await wait_all(confirmations, SUBSCRIBE_TIMEOUT)
        if conn.closed or client.sockets.get(ns) is not sock:
            return
        conn.accept(ns, session.sid)
        client.flush()
        sock.live = True
        self._transport_changed(sock)  # upgraded while its CONNECT went round the services
        if emits:
            if self.config.connect_emit_delay:
                # Write the CONNECT ack before the first emit rather than in the same burst:
                # naive clients (the official protocol test suite among them) read one packet
                # per wake-up and would miss a second one in the same read. Real clients need
                # no gap, so by default the emits leave in the same write as the ack.
                await client.drain(1.0)
                await asyncio.sleep(self.config.connect_emit_delay)
                if client.sockets.get(ns) is not sock:
                    return
            for emit in emits:
                self._send_event(sock, emit.event, emit.args, emit.ack_event)
            client.flush()

    # -- EVENT pipeline ------------------------------------------------------------------------
    async def _event(self, client: Client, request: EventReceived, turn: Turn) -> None:
        """Filters run at once; the owner's request keeps the socket's order (``turn``)."""
        sock = client.sockets.get(request.namespace)
        if sock is None:
            return
        event, args = request.event, request.args
        routing = self.backbone.routing
        try:
            for stage in routing.filters(sock.ns):
                reply = await self.backbone.request(
                    stage, RequestKind.FILTER, session=sock.session, event=event, args=args
                )
                if not reply.ok:
                    await turn.may_apply()
                    self._apply(sock, reply, request)
                    return
                if reply.args is not None:
                    args = reply.args
            owner = routing.owner(sock.ns, event)
            await turn.may_send()
            if owner is None:
                await turn.may_apply()
                self._fail(sock, request, f"unknown event: {event}")
                return
            reply = await self.backbone.request(
                owner, RequestKind.EVENT, sent=turn.sent, session=sock.session, event=event,
                args=args,
            )
        except ServiceUnavailable as exc:
            log.warning("event %r on %s failed: %s", event, sock.ns, exc)
            await turn.may_apply()
            self._fail(sock, request, ServiceUnavailable.client_message)
            return
        await turn.may_apply()
        await self._apply_async(sock, reply, request)

    async def _client_ack(self, client: Client, ack: AckReceived, turn: Turn) -> None:
        """A client acked a server emit: deliver its arguments as the emit's ``ack_event``."""
        sock = client.sockets.get(ack.namespace)
        ack_event = sock.acks.pop(ack.ack_id, None) if sock is not None and sock.acks else None
        if sock is None or ack_event is None:
            log.debug("unexpected ack %s from %s ignored", ack.ack_id, client.conn.sid)
            return
        owner = self.backbone.routing.owner(sock.ns, ack_event)
        if owner is None:
            return
        await turn.may_send()
        try:
            reply = await self.backbone.request(
                owner, RequestKind.EVENT, sent=turn.sent, session=sock.session,
                event=ack_event, args=ack.args,
            )
        except ServiceUnavailable as exc:
            log.warning("ack event %r not delivered: %s", ack_event, exc)
            return
        await turn.may_apply()
        await self._apply_async(sock, reply, EventReceived(sock.ns, ack_event, ack.args, None))

    def _send_event(self, sock: NsSocket, event: str, args: list[Any], ack_event: str) -> None:
        ack_id = sock.expect_ack(ack_event) if ack_event else None
        sock.client.conn.send_event(sock.ns, event, args, ack_id)

    async def _apply_async(self, sock: NsSocket, reply: Reply, request: EventReceived) -> None:
        if reply.session is not None and client_has(sock):
            sock.session = reply.session
        if reply.joins:
            await wait_all([self.index.join(sock, room) for room in reply.joins],
                           SUBSCRIBE_TIMEOUT)
        self._apply(sock, reply, request)

    def _apply(self, sock: NsSocket, reply: Reply, request: EventReceived) -> None:
        """Apply a final reply to the requesting socket: the one place replies become packets."""
        client = sock.client
        if client.sockets.get(sock.ns) is not sock:
            return  # left the namespace meanwhile
        for room in reply.leaves:
            self.index.leave(sock, room)
        if not reply.ok:
            self._fail(sock, request, reply.error or "request failed")
        elif request.ack_id is not None and reply.ack is not None:
            client.conn.send_ack(sock.ns, request.ack_id, reply.ack)
        for emit in reply.emits:
            self._send_event(sock, emit.event, emit.args, emit.ack_event)
        if reply.disconnect:
            client.conn.disconnect(sock.ns)
            self._drop_socket(sock)
        client.flush()

    def _fail(self, sock: NsSocket, request: EventReceived, message: str) -> None:
        """Failures reach the client as a failed ack, or as an ``error`` event without one."""
        m.EVENTS_FAILED.labels(sock.ns, self.event_labels(request.event)).inc()
        conn = sock.client.conn
        if request.ack_id is not None:
            conn.send_ack(sock.ns, request.ack_id, [{"success": False, "error": message}])
        else:
            conn.send_event(sock.ns, "error", [{"event": request.event, "message": message}])
        sock.client.flush()

    # -- leaving -------------------------------------------------------------------------------
    def _drop_socket(self, sock: NsSocket) -> None:
        client = sock.client
        if client.sockets.get(sock.ns) is not sock:
            return
        del client.sockets[sock.ns]
        self.index.remove(sock)
        m.SOCKETS.labels(sock.ns).dec()
        log.info("socket %s left %s (user %s) after %.1fs", sock.sid, sock.ns,
                 sock.session.user_id or "-", time.time() - sock.session.connected_at)
        self._notify_disconnect(
            sock.session, self.backbone.routing.disconnect_listeners(sock.ns)
        )

    def _notify_disconnect(self, session: Session, services: Iterable[str]) -> None:
        for service in services:
            self.spawn(self._disconnect_request(service, session))

    async def _disconnect_request(self, service: str, session: Session) -> None:
        try:
            await self.backbone.request(service, RequestKind.DISCONNECT, session=session)
        except ServiceUnavailable as exc:
            log.warning("DISCONNECT of %s not delivered to %s: %s", session.sid, service, exc)

    async def sync_service(self, service: str) -> None:
        # Sockets still in their CONNECT pipeline count too: a stage may already have
        # registered them, and a SYNC without them would make the service drop them.
        connecting = tuple(SocketState(session) for session in self.connecting.values())
        sockets = tuple(
            SocketState(sock.session, tuple(sorted(sock.rooms)))
            for sock in self.index.by_sid.values()
        ) + connecting
        try:
            await self.backbone.request(
                service, RequestKind.SYNC, timeout=max(self.config.request_timeout, 30.0),
                sockets=sockets,
            )
            log.info("sent %d sockets to %s", len(sockets), service)
        except ServiceUnavailable as exc:
            log.warning("SYNC to %s failed: %s", service, exc)

    # -- fan-out -------------------------------------------------------------------------------
    def _on_message(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            return
        topic, body = frames
        if body == topics.SUBSCRIBED_MARKER:
            self.subs.confirmed(topic)
            return
        if topic == topics.BROKER_HEARTBEAT:
            self._broker_heartbeat(body)
            return
        try:
            publication = Publication.decode(body)
        except EnvelopeError as exc:
            log.warning("undecodable publication on %r dropped: %s", topic, exc)
            return
        if publication.kind == PubKind.PEER:  # gateway announcements: not traffic
            self.peers.learn(publication)
            return
        self.counters["publications"] += 1
        self._publication_counters[publication.kind].inc()
        try:
            self._on_publication(publication)
        except Exception:
            log.exception("publication %s failed", publication.kind.name)

    def _on_publication(self, pub: Publication) -> None:
        if pub.kind == PubKind.RESYNC:
            if pub.source in self.backbone.instances:  # else it is synced once described
                self.spawn(self.backbone.resync(pub.source))
            return
        targets = self.index.targets(pub.ns, pub.room, pub.sids, pub.exclude)
        if not targets:
            return
        if pub.kind == PubKind.EMIT and pub.ack_event:
            for sock in targets:  # each needs its own ack id: no shared encoding here
                self._send_event(sock, pub.event, pub.args, pub.ack_event)
                sock.client.flush()
        elif pub.kind == PubKind.EMIT and pub.ns == ANY_NAMESPACE:
            for sock in targets:
                sock.client.conn.send_event(sock.ns, pub.event, pub.args)
                sock.client.flush()
        elif pub.kind == PubKind.EMIT:
            # Encoded once per message, then the same bytes are written to every member
            # (polling members queue the same packets).
            frames = encode_event_frames(pub.ns, pub.event, pub.args)
            data: bytes | None = None
            for sock in targets:
                client = sock.client
                if client.polling is None:
                    if data is None:
                        data = wsframe.encode_all(frames)
                    client.write(data)
                else:
                    client.queue(frames)
            self.counters["deliveries"] += len(targets)
            m.DELIVERIES.inc(len(targets))
            self._event_meter(False, pub.ns, pub.event).inc()
        elif pub.kind == PubKind.JOIN and pub.room is not None:
            for sock in targets:
                self.index.join(sock, pub.room)
        elif pub.kind == PubKind.LEAVE and pub.room is not None:
            for sock in targets:
                self.index.leave(sock, pub.room)
        elif pub.kind == PubKind.DISCONNECT:
            for sock in targets:
                conn = sock.client.conn
                if conn.closed:
                    continue
                if pub.event:
                    conn.send_event(sock.ns, pub.event, pub.args)
                conn.disconnect(sock.ns)
                sock.client.flush()
                self._drop_socket(sock)
        elif pub.kind == PubKind.CLOSE:
            for sock in targets:
                self._close_client(sock.client, "closed by server")
                sock.client.close(1000, "closed by server", CloseMode.GRACEFUL)

    def _broker_heartbeat(self, body: bytes) -> None:
        try:
            instance, _seq = msgpack.unpackb(body)
        except Exception:
            return
        self.broker_missed = 0
        self._broker_beat.set()
        if self.broker_instance is not None and instance != self.broker_instance:
            log.warning("broker restarted (instance %s)", instance)
        self.broker_instance = instance

    async def _announce_loop(self) -> None:
        """Tell the other gateways where this one takes their forwarded requests."""
        interval = self.config.heartbeat_interval
        while True:
            self.publisher.publish(topics.ALL_GATEWAYS, self.peers.announcement())
            self.publisher.drain_subscriptions()
            self.peers.prune()
            await asyncio.sleep(interval)

    async def _broker_watch(self) -> None:
        """Liveness counter for the broker (health); ZeroMQ heartbeats handle reconnects."""
        interval = self.config.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            self.broker_missed += 1
            if self.broker_missed == self.config.heartbeat_liveness:
                log.warning("broker silent for %d heartbeats", self.broker_missed)


def _too_many(wait: float) -> HttpResponse:
    return http.json_response(429, {"error": "too many requests"},
                              extra=[("Retry-After", retry_after(wait))])


def client_has(sock: NsSocket) -> bool:
    return sock.client.sockets.get(sock.ns) is sock


def _bounded_reason(reason: str) -> str:
    """Metric label for a close reason: a fixed set, never raw text from a peer."""
    for known in ("ping timeout", "connect timeout", "client close", "transport close",
                  "slow consumer", "server shutdown"):
        if reason.startswith(known):
            return known
    return "bad input"


async def run(config: GatewayConfig, stop: asyncio.Event | None = None) -> None:
    """Run a gateway until ``stop`` is set (the CLI sets it on SIGINT/SIGTERM)."""
    gateway = Gateway(config)
    await gateway.start()
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await gateway.stop()
        gateway.context.term()
