"""The gateway's client sessions: creating them, feeding them packets, their timers, and
every way they end (client close, bad input, timeouts, slowness, shutdown, hand-over).

This is the :class:`~switchboard.gateway.engine.SessionHost` of the Engine.IO endpoint. What
the sans-I/O connection reports (:mod:`switchboard.gateway.protocol` events) goes to the
request pipelines through the small :class:`SocketWork` interface; nothing here speaks to a
service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from switchboard.gateway import metrics as m
from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.http import HttpRequest
from switchboard.gateway.lane import Turn
from switchboard.gateway.output import CloseMode, Corker
from switchboard.gateway.protocol import (
    AckReceived,
    Closed,
    Connection,
    ConnectionConfig,
    ConnectRequested,
    DisconnectRequested,
    Event,
    EventReceived,
)
from switchboard.gateway.protocol.polling import Polling
from switchboard.gateway.transport import WsTransport

log = logging.getLogger("switchboard.gateway")

#: Handshake headers passed on to services (auth reads ``authorization``).
FORWARDED_HEADERS = ("authorization", "origin", "user-agent", "x-forwarded-for")
SHUTDOWN_NOTICE = {"message": "This server is shutting down; reconnect to continue."}


class SocketWork(Protocol):
    """What sessions hand to the request pipelines (:class:`~.pipelines.Pipelines`)."""

    async def connect(self, client: Client, request: ConnectRequested) -> None: ...

    async def event(self, client: Client, request: EventReceived, turn: Turn) -> None: ...

    async def client_ack(self, client: Client, ack: AckReceived, turn: Turn) -> None: ...

    def drop_socket(self, sock: NsSocket, reason: str = "") -> None: ...

    def drop_all(self, client: Client, recoverable: bool = False) -> None: ...

    def transport_changed(self, sock: NsSocket) -> None: ...

    def session_opened(self) -> None: ...

    def session_closed(self, client: Client, reason: str) -> None: ...


class Sessions:
    def __init__(self, conn_config: ConnectionConfig, write_limit: int, work: SocketWork,
                 meters: m.EventMeters, connection: type[Connection] = Connection) -> None:
        self.conn_config = conn_config
        #: What each session's protocol state is (the echo endpoint's echoes its messages).
        self.connection = connection
        self.write_limit = write_limit
        self.work = work
        self.meters = meters
        self.clients: set[Client] = set()
        self.corker = Corker()
        self.stopping = False
        self.counters = {"events": 0, "closed_bad_input": 0}
        self.peak_connections = 0

    # -- creating ----------------------------------------------------------------------------
    def forwarded_headers(self, request: HttpRequest) -> dict[str, str]:
        return {
            name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers
        }

    def new_session(self, sid: str, address: str, headers: dict[str, str], *,
                    link: WsTransport | None = None, polling: Polling | None = None,
                    send_open: bool = True, eio: int = 4,
                    auth: dict[str, str] | None = None) -> Client:
        """A handshake succeeded (or a session was handed over): start the session."""
        loop = asyncio.get_running_loop()
        upgrades = ("websocket",) if polling is not None else ()
        conn = self.connection(sid, self.conn_config, loop.time(), upgrades, send_open, eio=eio)
        client = Client(conn, address, headers, self.write_limit, self._slow, self.corker,
                        polling=polling)
        if link is not None:
            client.attach(link, self)
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
        if send_open:
            self.work.session_opened()
        events = conn.start(auth)  # a v3 client's automatic CONNECT to "/"
        if events:
            self._handle_events(client, events)
            client.flush()
        self.rearm(client)
        return client

    def upgraded(self, client: Client) -> None:
        for sock in client.sockets.values():
            self.work.transport_changed(sock)

    def rearm(self, client: Client) -> None:
        client.schedule(lambda: self._on_timer(client))

    def forget(self, client: Client) -> None:
        """The session moved to another gateway before any namespace was connected."""
        client.mark_lost()
        client.stop()
        self.clients.discard(client)
        m.CONNECTIONS.dec()
        m.TRANSPORT_CONNECTIONS.labels("polling").dec()

    # -- input ---------------------------------------------------------------------------------
    def on_message(self, client: Client, message: str | bytes) -> None:
        conn = client.conn
        if conn.closed:
            return
        events = conn.receive_frame(message, asyncio.get_running_loop().time())
        if events:
            self._handle_events(client, events)
        client.flush()

    def _on_timer(self, client: Client) -> None:
        polling = client.polling
        if polling is not None and polling.holding:
            deadline = polling.next_deadline()
            # Event-loop timers may fire a little early (uvloop's are in milliseconds).
            if deadline is not None and asyncio.get_running_loop().time() >= deadline - 0.002:
                self.release_held(client)
        events = client.conn.tick(asyncio.get_running_loop().time())
        if events:
            self._handle_events(client, events)
        client.flush()
        if not client.conn.closed:
            self.rearm(client)

    def release_held(self, client: Client) -> None:
        polling = client.polling
        if polling is None:
            return
        for packet in polling.release():
            if client.conn.closed:
                break
            self.on_message(client, packet)

    def _handle_events(self, client: Client, events: Iterable[Event]) -> None:
        work = self.work
        for event in events:
            if isinstance(event, EventReceived):
                self.counters["events"] += 1
                self.meters.received(event.namespace, event.event).inc()
                ev = event
                client.lane.submit(lambda turn, ev=ev: work.event(client, ev, turn))  # type: ignore[misc]
            elif isinstance(event, ConnectRequested):
                cr = event
                client.lane.submit(lambda turn, cr=cr: work.connect(client, cr),  # type: ignore[misc]
                              barrier=True)
            elif isinstance(event, DisconnectRequested):
                sock = client.sockets.get(event.namespace)
                if sock is not None:
                    work.drop_socket(sock, "client namespace disconnect")
            elif isinstance(event, AckReceived):
                ack = event
                client.lane.submit(lambda turn, ack=ack: work.client_ack(client, ack, turn))  # type: ignore[misc]
            elif isinstance(event, Closed):
                self._on_closed(client, event)

    # -- endings -------------------------------------------------------------------------------
    def _on_closed(self, client: Client, event: Closed) -> None:
        reason = event.reason
        if event.error:
            self.counters["closed_bad_input"] += 1
            log.info("closing connection %s from %s: %s", client.conn.sid, client.address, reason)
        m.CLOSES.labels(bounded_reason(reason)).inc()
        self.work.drop_all(client, recoverable=not event.error)
        if event.error:
            mode = CloseMode.ABORT
        else:
            mode = CloseMode.CLIENT if reason == "client close" else CloseMode.GRACEFUL
        client.close(1002 if event.error else 1000, reason, mode)

    def bad_input(self, client: Client, reason: str, code: int) -> None:
        self.counters["closed_bad_input"] += 1
        log.info("closing connection %s from %s: %s", client.conn.sid, client.address, reason)
        m.CLOSES.labels("bad input").inc()
        if not client.conn.closed:
            client.conn.close(reason)
        self.work.drop_all(client)
        client.close(code, reason, CloseMode.ABORT)
        if client.polling is not None:
            self.client_lost(client, reason)

    def client_lost(self, client: Client, reason: str) -> None:
        """The connection is gone or closing (idempotent)."""
        if not client.mark_lost():
            return
        self.work.session_closed(client, reason)
        bad = reason.startswith(("message too large", "invalid WebSocket"))
        if not client.conn.closed:
            if bad:
                self.counters["closed_bad_input"] += 1
                log.info("closing connection %s from %s: %s", client.conn.sid, client.address,
                         reason)
            self._handle_events(client, client.conn.connection_lost(reason))
        self.work.drop_all(client, recoverable=not bad)
        client.shut(reason)
        client.finish()  # its endpoint forgets its sid
        self.clients.discard(client)
        m.CONNECTIONS.dec()
        m.TRANSPORT_CONNECTIONS.labels(client.transport_name).dec()

    def close_client(self, client: Client, reason: str) -> None:
        """The server ends a connection: its sockets leave now, the transport after."""
        if not client.conn.closed:
            client.conn.close(reason)
            client.flush()
        self.work.drop_all(client)
        client.close(1000, reason, CloseMode.GRACEFUL)

    def _slow(self, client: Client) -> None:
        log.warning("disconnecting slow client %s (over %d bytes unsent)",
                    client.conn.sid, self.write_limit)
        m.CLOSES.labels("slow consumer").inc()
        if not client.conn.closed:
            client.conn.close("slow consumer")
        self.work.drop_all(client, recoverable=True)
        # The close frame queues behind the unread data; the close timeout drops the TCP
        # connection if the client never reads it. A polling client's waiting poll (if any)
        # is told the session is over.
        client.close(1008, "slow consumer", CloseMode.ABORT)
        if client.polling is not None:
            self.client_lost(client, "slow consumer")

    # -- shutdown ------------------------------------------------------------------------------
    def announce_shutdown(self) -> None:
        """Every live socket hears ``server shutdown`` (they may still finish requests)."""
        for client in list(self.clients):
            for sock in list(client.sockets.values()):
                if sock.live and not client.conn.closed:
                    client.conn.send_event(sock.ns, "server shutdown",
                                           sock.tail([SHUTDOWN_NOTICE]))
            client.flush()

    @property
    def busy(self) -> bool:
        return any(c.busy for c in self.clients)

    def close_all(self, reason: str) -> None:
        for client in list(self.clients):
            if not client.conn.closed:
                client.conn.close(reason)
                client.flush()
            self.work.drop_all(client, recoverable=True)  # clients recover elsewhere
        for client in list(self.clients):
            client.close(1001, reason, CloseMode.SHUTDOWN)

    def stats(self) -> dict[str, Any]:
        polling = sum(1 for c in self.clients if c.polling is not None)
        return {"connections": len(self.clients),
                "transports": {"websocket": len(self.clients) - polling, "polling": polling}}


def bounded_reason(reason: str) -> str:
    """Metric label for a close reason: a fixed set, never raw text from a peer."""
    for known in ("ping timeout", "connect timeout", "client close", "transport close",
                  "slow consumer", "server shutdown"):
        if reason.startswith(known):
            return known
    return "bad input"
