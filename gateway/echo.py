"""The Engine.IO echo endpoint that the official engine.io-protocol test suite talks to
(``/engine.io/``, conformance mode only): every MESSAGE a client sends comes back to it.

Plain Engine.IO, no Socket.IO: the same :class:`~gateway.engine.Engine` (handshakes,
polling, the upgrade) over the same :class:`~gateway.sessions.Sessions`, whose connections
here echo messages instead of decoding them as Socket.IO packets. Heartbeats and closing are
the real ones.
"""

from __future__ import annotations

from dataclasses import replace

from switchboard.gateway import metrics as m
from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.lane import Turn
from switchboard.gateway.protocol import Connection, ConnectionConfig, Event
from switchboard.gateway.protocol.events import AckReceived, ConnectRequested, EventReceived
from switchboard.gateway.sessions import Sessions

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


class EchoWork:
    """What echo sessions ask of the Socket.IO layer: nothing (a
    :class:`~gateway.sessions.SocketWork` for sessions that never connect a namespace)."""

    async def connect(self, client: Client, request: ConnectRequested) -> None:
        raise AssertionError("an echo session connects no namespace")

    async def event(self, client: Client, request: EventReceived, turn: Turn) -> None:
        raise AssertionError("an echo session receives no Socket.IO event")

    async def client_ack(self, client: Client, ack: AckReceived, turn: Turn) -> None:
        raise AssertionError("an echo session receives no Socket.IO ack")

    def drop_socket(self, sock: NsSocket, reason: str = "") -> None:
        pass

    def drop_all(self, client: Client, recoverable: bool = False) -> None:
        pass

    def transport_changed(self, sock: NsSocket) -> None:
        pass

    def session_opened(self) -> None:
        pass

    def session_closed(self, client: Client, reason: str) -> None:
        pass


def echo_sessions(config: ConnectionConfig, write_limit: int,
                  meters: m.EventMeters) -> Sessions:
    """The sessions of the echo endpoint: :class:`~gateway.sessions.Sessions` whose
    connections echo, with no connect timeout (no namespace is ever connected here)."""
    return Sessions(replace(config, connect_timeout=1e9), write_limit, EchoWork(), meters,
                    connection=EchoConnection)
