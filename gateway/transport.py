"""The gateway's network edge: one asyncio Protocol per TCP connection.

WebSocket framing and the HTTP upgrade come from websockets' sans-I/O ``ServerProtocol``;
Engine.IO/Socket.IO from :mod:`gateway.protocol`. This class only moves bytes between the
socket and those two state machines: no task, queue or future per connection, which keeps
an idle connection cheap (memory) and a delivery cheap (CPU).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

if TYPE_CHECKING:
    from gateway.client import Client
    from gateway.server import Gateway

log = logging.getLogger("switchboard.gateway.transport")
_WS_LOG = logging.getLogger("websockets.server")

#: Seconds to wait for the peer's closing handshake before dropping the TCP connection.
CLOSE_TIMEOUT = 2.0

_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class WsTransport(asyncio.Protocol):
    __slots__ = (
        "_close_timer",
        "_fragment_text",
        "_fragments",
        "address",
        "client",
        "gateway",
        "protocol",
        "transport",
    )

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.protocol = ServerProtocol(max_size=gateway.config.max_payload, logger=_WS_LOG)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.address = ""
        self._fragments: list[bytes | bytearray | memoryview] | None = None
        self._fragment_text = False
        self._close_timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.address = peer[0] if peer else ""

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Frame):
                if self.client is not None and event.opcode in _DATA:
                    self._data_frame(event)
                elif event.opcode is Opcode.CLOSE and self.client is not None:
                    self.gateway.client_lost(self.client, "transport close")
            elif isinstance(event, Request):
                self._handshake(event)
        self._send_pending()
        if self.client is not None and protocol.state is not State.OPEN:
            self.gateway.client_lost(self.client, self._close_reason())

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._send_pending()
        return None  # let asyncio close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self.client is not None:
            self.gateway.client_lost(self.client, "transport close")

    # -- handshake and frames ----------------------------------------------------------------
    def _handshake(self, request: Request) -> None:
        self.address = self.gateway.client_address(self.address, request)
        response: Response | None = self.gateway.process_request(self, request)
        if response is None:
            response = self.protocol.accept(request)
            response.headers["Server"] = "switchboard"
        self.protocol.send_response(response)
        self._send_pending()  # the 101 must precede the Engine.IO open packet
        if response.status_code == 101:
            self.client = self.gateway.open_client(self, request)

    def _data_frame(self, frame: Frame) -> None:
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
        assert self.client is not None
        if text:
            try:
                message: str | bytes = bytes(data).decode()
            except UnicodeDecodeError:
                self.gateway.bad_input(self.client, "invalid UTF-8 in a text frame", 1007)
                return
        else:
            message = bytes(data)
        self.gateway.on_message(self.client, message)

    def _close_reason(self) -> str:
        sent = self.protocol.close_sent
        code = sent.code if sent is not None else self.protocol.close_code
        if code == 1009:
            return f"message too large (over maxPayload {self.gateway.config.max_payload} bytes)"
        if code in (1002, 1007):
            return "invalid WebSocket frame"
        return "transport close"

    # -- output --------------------------------------------------------------------------------
    def _send_pending(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.client is not None:
            self.client.write_pending()  # frames queued before a close frame go first
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
        return self.protocol.state is State.OPEN

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (after anything already written)."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason[:120])
            self._send_pending()
        elif self.transport is not None and self.protocol.state is State.CONNECTING:
            self.transport.close()
