"""The gateway process: its parts put together, started and stopped.

A gateway holds only what dies with its connections. Its rooms, each with one job:

==========================  ============================================================
:mod:`.front`               HTTP routing and rate limits (``/socket.io/``, ops, the web app)
:mod:`.engine`              the Engine.IO endpoint: handshakes, polling, upgrades, relaying
:mod:`.sessions`            client sessions: packets in, timers, every way they end
:mod:`.pipelines`           CONNECT and EVENT requests to the services, replies applied
:mod:`.fanout`              the broker's publications delivered to local sockets
:mod:`.backbone`            request/reply with the services (heartbeats, restarts)
:mod:`.peers`               the other gateways (polling requests for their sessions)
==========================  ============================================================

``docs/architecture.md`` shows how a chat message passes through them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import zmq
import zmq.asyncio

from switchboard.gateway import http
from switchboard.gateway import metrics as m
from switchboard.gateway.adminui import STATS_INTERVAL as ADMIN_STATS_INTERVAL
from switchboard.gateway.adminui import AdminUi, AdminUiConfig
from switchboard.gateway.admission import Admission
from switchboard.gateway.backbone import Backbone
from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.config import GatewayConfig
from switchboard.gateway.continuity import AskReplay
from switchboard.gateway.echo import echo_sessions
from switchboard.gateway.engine import Engine, EngineConfig
from switchboard.gateway.exchange import HttpLimits
from switchboard.gateway.fanout import Fanout
from switchboard.gateway.figures import Figures
from switchboard.gateway.front import Front
from switchboard.gateway.gatekeeper import Gatekeeper, KeysFeed
from switchboard.gateway.health import HealthLimits
from switchboard.gateway.httpconn import HttpConnection
from switchboard.gateway.index import LocalIndex, RoomObservers
from switchboard.gateway.peers import Peers, PeerUnavailable
from switchboard.gateway.pipelines import Pipelines
from switchboard.gateway.policing import EventPolicy, PolicyFeed
from switchboard.gateway.protocol import ConnectionConfig
from switchboard.gateway.proxies import parse_networks
from switchboard.gateway.recovery import Recovery, RecoverySettings
from switchboard.gateway.sessions import Sessions
from switchboard.gateway.subscriptions import Subscriptions
from switchboard.gateway.web import WebRoutes
from switchboard.shared import topics
from switchboard.shared.envelope import (
    GatewayStatus,
    PeerKind,
    PeerReply,
    PeerRequest,
    Publication,
)
from switchboard.shared.errors import ConfigError
from switchboard.shared.policy import PolicyReplica
from switchboard.shared.process import unless_stopped
from switchboard.shared.publisher import ZmqPublisher

log = logging.getLogger("switchboard.gateway")


#: Before a replay is asked for: how long the broker gets to have our subscriptions in force.
REPLAY_SETTLE = 3.0
#: A recovering socket's previous gateway gets this long to say whether it still holds it.
HOLDS_TIMEOUT = 1.0


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
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self.server: asyncio.Server | None = None
        self.ready = asyncio.Event()
        meters = m.EventMeters()
        conn_config = ConnectionConfig(
            ping_interval=config.ping_interval, ping_timeout=config.ping_timeout,
            max_payload=config.max_payload, connect_timeout=config.connect_timeout,
        )
        # -- the service backbone and the broker's stream
        self.backbone = Backbone(
            self.id, config.service_endpoints(), self.context, config.request_timeout,
            status=self.status, on_restart=self._sync_service,
            liveness=config.heartbeat_liveness, instance=self.instance,
        )
        self.subs = Subscriptions(self.context, config.broker_sub, self._on_broker,
                                  on_reconnect=self._broker_reconnected)
        self.admission = Admission(config.handshake_rate)
        # -- the moderation policy every event is judged by (gateway.policing)
        try:
            self._policy_source = config.policy_source()
            self._keys_source = config.auth_source()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.policy_replica = PolicyReplica()
        self.policy = EventPolicy(self.policy_replica,
                                  required=lambda: self._policy_source is not None)
        self.policy_feed = PolicyFeed(self.policy_replica, self._policy_source, self.backbone,
                                      self.subs,
                                      interval=config.heartbeat_interval,
                                      timeout=config.request_timeout)
        # -- who may connect: tokens, connect rates, bans (gateway.gatekeeper)
        self.gate = Gatekeeper(self.policy_replica,
                               keys_required=lambda: self._keys_source is not None,
                               policy_required=lambda: self._policy_source is not None)
        self.keys_feed = KeysFeed(self.gate, self._keys_source, self.backbone,
                                  interval=config.heartbeat_interval,
                                  timeout=config.request_timeout)
        # -- the parts that watch rooms, built after the index they query
        observers = RoomObservers()
        self.index = LocalIndex(self.subs, self.id, observers)
        self.recovery: Recovery | None = None
        if config.recovery_namespaces:
            routing = self.backbone.routing
            self.recovery = Recovery(
                RecoverySettings(frozenset(config.recovery_namespaces),
                                 config.recovery_skip_middlewares, config.recovery_grace),
                self.backbone, self.spawn, lambda: routing.recovery, self._holds)
            observers.add(self.recovery)
        #: Announces this gateway's peer endpoint on the broker (see gateway.peers).
        self.publisher = ZmqPublisher(self.context, config.broker_pub, self.id)
        #: The Admin UI's instrumentation (only with a password hash configured).
        self.admin: AdminUi | None = None
        if config.admin_ui_password_hash:
            self.admin = AdminUi(
                AdminUiConfig(config.admin_ui_namespace, config.admin_ui_username,
                              config.admin_ui_password_hash),
                self.id, self.publisher, self.index, self._connection_counts)
            observers.add(self.admin)
        # -- a socket's requests, and what the broker sends
        self.pipelines = Pipelines(
            self.id, self.backbone, self.index, meters, self.spawn,
            connect_emit_delay=config.connect_emit_delay,
            sync_timeout=max(config.request_timeout, 30.0), admission=self.admission,
            policy=self.policy, gate=self.gate, recovery=self.recovery, admin=self.admin,
        )
        self.sessions = Sessions(conn_config, config.write_limit, self.pipelines, meters)
        self.fanout = Fanout(self.subs, self.index, self, meters, config.heartbeat_liveness,
                             frozenset(config.recovery_namespaces), len(config.broker_sub))
        # -- the Engine.IO endpoint and the other gateways
        self.cors = http.CorsPolicy(frozenset(config.allowed_origins), config.cors_credentials,
                                    any_when_unset=config.demo)
        self.peers = Peers(self.id, self.instance, self.context, config.peer_bind,
                           config.peer_address, self._peer_request,
                           stale_after=max(10 * config.heartbeat_interval, 3.0),
                           crowds=self.admission)
        self.engine = Engine(self.id, EngineConfig(
            max_payload=config.max_payload,
            max_packets=config.polling_max_packets,
            upgrade_hold=config.upgrade_hold,
            upgrade_timeout=config.upgrade_timeout,
            forward_timeout=config.request_timeout,
            poll_timeout=config.ping_interval + config.ping_timeout + config.request_timeout,
            write_limit=config.write_limit,
            allow_eio3=config.allow_eio3,
        ), self.sessions, self.cors, self.peers)
        self.echo: Engine | None = None
        if config.engine_echo:
            self.echo = Engine(self.id, replace(self.engine.config, upgrade_hold=0,
                                                allow_eio3=False),
                               echo_sessions(conn_config, config.write_limit, meters), self.cors)
        # -- HTTP
        self.figures = Figures(self)
        self.health_limits = HealthLimits(
            config.max_connections_warning, config.max_memory_mb, config.max_error_rate
        )
        self.front = Front(
            self.engine, WebRoutes(config), self.figures.stats, self.figures.health,
            trusted_proxies=parse_networks(config.trusted_proxies),
            http_rate=config.http_rate, token_rate=config.token_rate,
            admission=self.admission, echo=self.echo,
        )
        self.http_limits = HttpLimits(
            max_body=config.max_http_buffer_size, head_timeout=config.http_header_timeout,
            body_timeout=config.http_body_timeout, keep_alive=config.http_keep_alive,
        )

    @property
    def stopping(self) -> bool:
        return self.sessions.stopping

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.subs.add(topics.gateway(self.id))
        self.subs.add(topics.BROKER_HEARTBEAT)
        self.subs.add(topics.ALL_GATEWAYS)
        if self._policy_source is not None:
            self.policy_feed.subscribe()
        self.subs.start()
        self.backbone.start()
        self.peers.start()
        try:
            await asyncio.wait_for(self.fanout.broker_seen.wait(), self.config.ready_timeout)
        except TimeoutError:
            silent = [self.config.broker_sub[k] for k, b in enumerate(self.fanout.brokers)
                      if b.instance is None]
            log.warning("broker %s not reachable at start", ", ".join(silent))
        described = await self.backbone.wait_described(self.config.ready_timeout)
        self._check_namespaces(described)
        serving = self.backbone.routing.keys
        if self._keys_source is None and serving is not None and \
                self.config.auth_service.strip() == "auto":
            log.warning("service %s hands out token keys, but no service named auth is in "
                        "--services: tokens are not checked and every socket is anonymous "
                        "(name it: --auth-service %s)", serving, serving)
        for feed in (self.policy_feed, self.keys_feed):
            task = await feed.start()
            if task is not None:
                self._loops.append(task)
        interval = self.config.heartbeat_interval
        self._loops += [
            asyncio.create_task(self.backbone.heartbeat_loop(interval)),
            asyncio.create_task(self.fanout.watch_broker(interval)),
            asyncio.create_task(self._announce_loop(interval)),
        ]
        if self.admin is not None:
            self._loops.append(asyncio.create_task(self._admin_stats_loop(self.admin)))
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: HttpConnection(self.front, self.http_limits), self.config.host,
            self.config.port, reuse_address=True, backlog=4096,
        )
        self.ready.set()
        log.info("gateway %s ready on http://%s:%d%s", self.id, self.config.host,
                 self.config.port, http.ENGINE_PATH)

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, tell sockets, finish in-flight work, leave.

        Services hear every socket leave (DISCONNECT) before the process exits, so presence
        and room counts are right at once rather than after the heartbeat timeout. The whole
        stop takes ``shutdown_grace`` at most (``up`` gives its gateways half its own grace,
        so none needs killing): resyncs and replays, which no client waits for, are
        cancelled rather than waited for.
        """
        sessions = self.sessions
        sessions.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_grace
        if self.server is not None:
            self.server.close()  # stop listening; connections stay until closed below
        log.info("gateway %s shutting down: %d connections", self.id, len(sessions.clients))
        sessions.announce_shutdown()
        # In-flight requests (acks) finish; new events are still answered meanwhile.
        while sessions.busy and loop.time() < deadline:
            await asyncio.sleep(0.02)
        sessions.close_all("server shutdown")
        for task in self._background:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=max(deadline - loop.time(), 0.1))
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(),
                                       max(deadline - loop.time(), 0.1))
        for task in (*self._loops, *self._tasks):
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.backbone.close()
        self.subs.close()
        self.peers.close()
        self.publisher.close()
        log.info("gateway %s stopped", self.id)

    def _check_namespaces(self, described: bool) -> None:
        """Every namespace a setting names is one a service serves: a recovery namespace
        nobody serves would be accepted and silently do nothing."""
        served = self.backbone.routing.namespaces
        unserved = [ns for ns in self.config.recovery_namespaces if ns not in served]
        if not unserved:
            return
        message = (f"--recovery-namespaces: {', '.join(unserved)} served by no service "
                   f"(served: {', '.join(sorted(served)) or 'none'})")
        if not described:  # a service still missing may serve it
            log.warning("%s yet; a service did not answer at start", message)
            return
        raise ConfigError(message)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run work a client may be waiting for (a stop gives it the grace)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn_background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run upkeep no client waits for (a stop cancels it)."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _announce_loop(self, interval: float) -> None:
        """Tell the other gateways where this one takes their forwarded requests."""
        while True:
            self.publisher.publish(topics.ALL_GATEWAYS, self.peers.announcement())
            self.publisher.drain_subscriptions()
            self.peers.prune()
            await asyncio.sleep(interval)

    async def _admin_stats_loop(self, admin: AdminUi) -> None:
        while True:
            await asyncio.sleep(ADMIN_STATS_INTERVAL)
            admin.publish_stats()

    def _connection_counts(self) -> tuple[int, int]:
        clients = self.sessions.clients
        return len(clients), sum(1 for c in clients if c.polling is not None)

    # -- wiring between the rooms ------------------------------------------------------------
    def _on_broker(self, frames: list[bytes], broker: int) -> None:
        self.fanout.on_message(frames, broker)

    def _broker_reconnected(self, lost_at: float, broker: int) -> None:
        self.fanout.reconnected(lost_at, broker)

    def _peer_request(self, identity: bytes, request: PeerRequest) -> None:
        if request.kind == PeerKind.HOLDS:
            held = self.pipelines.departures.holds(request.sid)
            self.peers.reply(identity, PeerReply(request.id, 200 if held else 404))
            return
        self.engine.on_peer_request(identity, request)

    async def _holds(self, gateway: str, sid: str) -> bool | None:
        """Whether ``gateway`` has socket ``sid`` connected (None: it cannot say)."""
        if gateway == self.id:
            return self.pipelines.departures.holds(sid)
        peer = await self.peers.find(gateway, HOLDS_TIMEOUT)
        if peer is None or not peer.up:
            return None  # a crashed gateway's link is down at once
        try:
            reply = await self.peers.request(
                peer, self.peers.new_request(kind=PeerKind.HOLDS, sid=sid), HOLDS_TIMEOUT)
        except PeerUnavailable:
            return None
        return reply.status == 200

    async def _sync_service(self, service: str) -> None:
        await self.pipelines.connects.sync_service(service)

    # fanout.Actions
    def drop_socket(self, sock: NsSocket) -> None:
        self.pipelines.drop_socket(sock)

    def close_client(self, client: Client, reason: str) -> None:
        self.sessions.close_client(client, reason)

    def release(self, pub: Publication) -> None:
        self.pipelines.departures.release(pub)

    def resync(self, service: str) -> None:
        if service in self.backbone.instances:  # else it is synced once described
            self._spawn_background(self.backbone.resync(service))

    def report(self, pub: Publication) -> None:
        if self.admin is not None:
            self.admin.report(pub)

    def peer(self, announcement: Publication) -> None:
        self.peers.learn(announcement)

    def replay(self, ask: AskReplay) -> None:
        self._spawn_background(self._replay(ask))

    def policy_changed(self, pub: Publication) -> None:
        self.policy_feed.on_publication(pub)

    async def _replay(self, ask: AskReplay) -> None:
        """Fetch what ``ask.origin`` published after ``ask.after`` (docs/delivery.md): once
        its path's broker has our subscriptions in force, so that nothing slips between the replay
        and the live stream; a few tries, then what was held is delivered without it."""
        await self.fanout.before_replay(ask, REPLAY_SETTLE)
        self.fanout.replayed(ask.origin,
                             await self.backbone.replay(ask.source, ask.origin, ask.after))

    # -- state for heartbeats, /stats and /health --------------------------------------------
    def status(self) -> GatewayStatus:
        return GatewayStatus(
            self.started_at,
            self.index.counts(),
            f"{self.config.host}:{self.config.port}",
        )


async def run(config: GatewayConfig, stop: asyncio.Event | None = None) -> None:
    """Run a gateway until ``stop`` is set (the CLI sets it on SIGINT/SIGTERM)."""
    gateway = Gateway(config)
    stop = stop or asyncio.Event()
    try:
        if await unless_stopped(gateway.start(), stop):
            await stop.wait()
    finally:
        await gateway.stop()
        gateway.context.term()
