"""The Engine.IO echo endpoint that the official engine.io-protocol test suite talks to
(``/engine.io/``, conformance mode only): every MESSAGE a client sends comes back to it.

Plain Engine.IO, no Socket.IO: the same :class:`~gateway.engine.Engine` (handshakes,
polling, the upgrade) over sessions whose connection echoes messages instead of decoding
them as Socket.IO packets. Heartbeats and closing are the real ones.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from switchboard.gateway.client import Client, CloseMode, Corker
from switchboard.gateway.http import HttpRequest
from switchboard.gateway.protocol import Closed, Connection, ConnectionConfig, Event
from switchboard.gateway.protocol.polling import Polling
from switchboard.gateway.transport import WsTransport

ENGINE_ECHO_PATH = "/engine.io/"


class EchoConnection(Connection):
    """A Connection whose MESSAGE packets are sent back, not parsed."""

    __slots__ = ()

    def receive_frame(self, data: str | bytes | bytearray | memoryview, now: float) -> list[Event]:
        if self.closed:
            return []
        if isinstance(data, str):
            if data[:1] == "4":
                self.send_frames([data])
                return []
            return super().receive_frame(data, now)
        self.send_frames([bytes(data)])
        return []


class EchoHost:
    """The sessions of the echo endpoint (a :class:`~gateway.engine.SessionHost`)."""

    def __init__(self, config: ConnectionConfig, write_limit: int) -> None:
        # No namespace is ever connected here: the connect timeout must not apply.
        self.config = ConnectionConfig(config.ping_interval, config.ping_timeout,
                                       config.max_payload, connect_timeout=1e9)
        self.write_limit = write_limit
        self.corker = Corker()
        self.clients: set[Client] = set()
        self.stopping = False
        self.engine: Any = None  # set by the owner: gateway.engine.Engine

    def new_session(self, sid: str, address: str, headers: dict[str, str], *,
                    link: WsTransport | None = None, polling: Polling | None = None,
                    send_open: bool = True, eio: int = 4,
                    auth: dict[str, str] | None = None) -> Client:
        # The echo engine speaks Engine.IO v4 only (it is built with allow_eio3 off).
        upgrades = ("websocket",) if polling is not None else ()
        conn = EchoConnection(sid, self.config, asyncio.get_running_loop().time(), upgrades,
                              send_open)
        client = Client(conn, address, headers, self.write_limit, self._slow, self.corker,
                        polling=polling)
        if link is not None:
            client.attach(link, self)
        client.started = time.monotonic()
        self.clients.add(client)
        client.flush()
        client.schedule(lambda: self._tick(client))
        return client

    def upgraded(self, client: Client) -> None:
        pass

    def rearm(self, client: Client) -> None:
        client.schedule(lambda: self._tick(client))

    def on_message(self, client: Client, message: str | bytes) -> None:
        self._events(client, client.conn.receive_frame(message,
                                                       asyncio.get_running_loop().time()))
        client.flush()

    def _tick(self, client: Client) -> None:
        if self.engine is not None:
            self.engine.release_due(client)
        self._events(client, client.conn.tick(asyncio.get_running_loop().time()))
        client.flush()
        if not client.conn.closed:
            client.schedule(lambda: self._tick(client))

    def _events(self, client: Client, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Closed):
                if event.error:
                    mode = CloseMode.ABORT
                else:
                    mode = CloseMode.CLIENT if event.reason == "client close" else \
                        CloseMode.GRACEFUL
                client.close(1002 if event.error else 1000, event.reason, mode)
                if client.polling is not None:
                    self.client_lost(client, event.reason)

    def bad_input(self, client: Client, reason: str, code: int) -> None:
        client.conn.close(reason)
        client.close(code, reason, CloseMode.ABORT)
        self.client_lost(client, reason)

    def _slow(self, client: Client) -> None:
        self.bad_input(client, "slow consumer", 1008)

    def client_lost(self, client: Client, reason: str) -> None:
        if client.lost:
            return
        client.lost = True
        client.conn.connection_lost(reason)
        client.shut(reason)
        if self.engine is not None:
            self.engine.forget_session(client)
        self.clients.discard(client)

    def forget(self, client: Client) -> None:
        client.lost = True
        client.stop()
        self.clients.discard(client)

    def forwarded_headers(self, request: HttpRequest) -> dict[str, str]:
        return {}
