"""What an HTTP application sees of a connection: one request to answer (:class:`Exchange`),
one WebSocket handshake to decide (:class:`Upgrade`), the :class:`HttpApp` interface it
implements, and the limits a connection enforces (:class:`HttpLimits`).

:mod:`.httpconn` implements :class:`Wire`; applications never see the connection itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from switchboard.gateway.http import HttpRequest, HttpResponse


class Wire(Protocol):
    """The connection under an exchange, as far as the exchange needs it."""

    @property
    def address(self) -> str: ...

    @property
    def lost(self) -> bool: ...

    @property
    def transport(self) -> asyncio.Transport | None: ...

    def answered(self) -> None:
        """An exchange has its response: write what is next in order."""

    def finish_upgrade(self, protocol: asyncio.Protocol | None, head: bytes, rest: bytes,
                       ready: Callable[[], None] | None) -> None:
        """Write ``head`` and hand the transport to ``protocol`` (None: close)."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_head: int = 16_384
    max_body: int = 1_000_000
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive: float = 5.0
    max_pipelined: int = 16


class Exchange:
    """One request awaiting its response; answered once, now or later (long-polling)."""

    __slots__ = ("_conn", "on_abort", "request", "response")

    def __init__(self, conn: Wire, request: HttpRequest) -> None:
        self._conn = conn
        self.request = request
        self.response: HttpResponse | None = None
        #: Called if the connection goes away before the response was written.
        self.on_abort: Callable[[], None] | None = None

    @property
    def address(self) -> str:
        return self._conn.address

    @property
    def answered(self) -> bool:
        return self.response is not None

    @property
    def open(self) -> bool:
        """The client is still there to read an answer."""
        return not self._conn.lost

    def respond(self, response: HttpResponse) -> None:
        if self.response is not None:
            return
        self.response = response
        self.on_abort = None
        self._conn.answered()


class Upgrade:
    """A WebSocket handshake request, decided by the application (possibly later)."""

    __slots__ = ("_conn", "request", "rest")

    def __init__(self, conn: Wire, request: HttpRequest, rest: bytes) -> None:
        self._conn = conn
        self.request = request
        self.rest = rest

    @property
    def address(self) -> str:
        return self._conn.address

    @property
    def open(self) -> bool:
        return not self._conn.lost

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._conn.transport

    def refuse(self, response: HttpResponse) -> None:
        """Answer with an HTTP error and close."""
        self._conn.finish_upgrade(None, response.serialize(False), b"", None)

    def accept(self, protocol: asyncio.Protocol, handshake: bytes,
               ready: Callable[[], None] | None = None) -> None:
        """Write the ``101`` (``handshake``) and hand the connection to ``protocol``;
        ``ready`` runs once ``protocol`` has its transport, before it reads anything."""
        self._conn.finish_upgrade(protocol, handshake, self.rest, ready)


class HttpApp(Protocol):
    def client_address(self, peer: str, request: HttpRequest) -> str:
        """The client's address (behind trusted proxies, from X-Forwarded-For)."""

    def handle(self, exchange: Exchange) -> None:
        """Answer ``exchange`` (``exchange.respond``), now or later."""

    def upgrade(self, upgrade: Upgrade) -> None:
        """Accept or refuse a WebSocket handshake, now or later."""
