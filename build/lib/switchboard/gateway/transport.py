"""The gateway's WebSocket edge: the handshake, then one asyncio Protocol per connection.

The HTTP/1.1 layer (:mod:`gateway.httpconn`) parses the upgrade request; :func:`handshake`
checks it with websockets' sans-I/O ``ServerProtocol`` and builds the ``101``; from then on
:class:`WsTransport` owns the TCP connection (``transport.set_protocol``) and moves bytes
between it and websockets' framing. Messages go to the callbacks the owner sets — the
session's handler, or during an upgrade the probe's — with no task, queue or future per
connection, which keeps an idle connection cheap (memory) and a delivery cheap (CPU).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from switchboard.gateway.http import HttpRequest

log = logging.getLogger("switchboard.gateway.transport")
_WS_LOG = logging.getLogger("websockets.server")

#: Seconds to wait for the peer's closing handshake before dropping the TCP connection.
CLOSE_TIMEOUT = 2.0

_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


def handshake(request: HttpRequest) -> tuple[bool, bytes]:
    """Check a WebSocket upgrade request: (accepted, the response's bytes)."""
    checker = ServerProtocol(logger=_WS_LOG)
    response = checker.accept(Request(request.target, Headers(list(request.headers.items()))))
    response.headers["Server"] = "switchboard"
    return response.status_code == 101, response.serialize()


def _ignore_message(_message: str | bytes) -> None:
    pass


def _ignore_end(_reason: str) -> None:
    pass


def _ignore_bad(_reason: str, _code: int) -> None:
    pass


class WsTransport(asyncio.Protocol):
    """One WebSocket connection after its handshake.

    ``on_message(message)`` gets each complete text (``str``) or binary (``bytes``)
    message; ``on_end(reason)`` is called once when the connection is over or closing;
    ``on_bad(reason, code)`` for input that breaks WebSocket rules beyond the framing
    (invalid UTF-8). The owner swaps these as the connection changes hands.
    """

    __slots__ = (
        "_close_timer",
        "_ended",
        "_fragment_text",
        "_fragments",
        "before_send",
        "max_payload",
        "on_bad",
        "on_end",
        "on_message",
        "protocol",
        "transport",
    )

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self.protocol = ServerProtocol(state=State.OPEN, max_size=max_payload, logger=_WS_LOG)
        self.transport: asyncio.Transport | None = None
        self.on_message: Callable[[str | bytes], None] = _ignore_message
        self.on_end: Callable[[str], None] = _ignore_end
        self.on_bad: Callable[[str, int], None] = _ignore_bad
        #: Called before protocol output (pongs, close frames) is written, so that data
        #: frames queued for this iteration go first.
        self.before_send: Callable[[], None] | None = None
        self._ended = False
        self._fragments: list[bytes | bytearray | memoryview] | None = None
        self._fragment_text = False
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Frame):
                if event.opcode in _DATA:
                    self._data_frame(event)
                elif event.opcode is Opcode.CLOSE:
                    self._end("transport close")
        self._send_pending()
        if protocol.state is not State.OPEN:
            self._end(self._close_reason())

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._send_pending()
        return None  # let asyncio close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        self._end("transport close")

    # -- frames ----------------------------------------------------------------------------
    def _data_frame(self, frame: Frame) -> None:
        if self._ended:
            return
        if frame.opcode is Opcode.CONT:
            if self._fragments is None:
                return  # the protocol already failed the connection
            self._fragments.append(frame.data)
            if not frame.fin:
                return
            data: bytes | bytearray | memoryview = b"".join(self._fragments)
            text = self._fragment_text
            self._fragments = None
        elif not frame.fin:
            self._fragments = [frame.data]
            self._fragment_text = frame.opcode is Opcode.TEXT
            return
        else:
            data = frame.data
            text = frame.opcode is Opcode.TEXT
        if text:
            try:
                message: str | bytes = bytes(data).decode()
            except UnicodeDecodeError:
                self.on_bad("invalid UTF-8 in a text frame", 1007)
                return
        else:
            message = bytes(data)
        self.on_message(message)

    def _end(self, reason: str) -> None:
        if not self._ended:
            self._ended = True
            self.on_end(reason)

    def _close_reason(self) -> str:
        sent = self.protocol.close_sent
        code = sent.code if sent is not None else self.protocol.close_code
        if code == 1009:
            return f"message too large (over maxPayload {self.max_payload} bytes)"
        if code in (1002, 1007):
            return "invalid WebSocket frame"
        return "transport close"

    # -- output --------------------------------------------------------------------------------
    def _send_pending(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.before_send is not None:
            self.before_send()  # frames queued before a close frame go first
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        if self.protocol.close_expected() and self._close_timer is None:
            loop = asyncio.get_running_loop()
            # abort, not close: close() would first flush the write buffer, which a peer
            # that stopped reading never lets happen (its buffer and descriptor would leak).
            self._close_timer = loop.call_later(CLOSE_TIMEOUT, transport.abort)

    @property
    def is_open(self) -> bool:
        return self.protocol.state is State.OPEN and not self._ended

    def send_text(self, text: str) -> None:
        """One text message outside the session's write path (the upgrade probe)."""
        if self.transport is not None and self.protocol.state is State.OPEN:
            self.protocol.send_text(text.encode())
            self._send_pending()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (after anything already written)."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason[:120])
            self._send_pending()
