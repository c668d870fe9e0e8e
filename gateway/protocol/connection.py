"""Per-connection Engine.IO v4 + Socket.IO v5 state machine (sans-I/O).

The I/O layer owns the WebSocket and the clock; this object owns the protocol::

    conn = Connection(sid, config, now)       # queues the OPEN frame
    send(conn.data_to_send())
    loop:
        on frame:      events = conn.receive_frame(frame, now)
        at deadline:   events = conn.tick(now)           # see next_deadline()
        handle events; call accept/refuse/send_event/... as the app decides
        send(conn.data_to_send())
        if conn.closed: close the WebSocket

Namespace life cycle (per namespace, :data:`NS_TRANSITIONS`)::

    absent --client CONNECT--> pending --accept()--> connected
                                  \\--refuse()--> absent      (CONNECT_ERROR sent)
    connected --client DISCONNECT / disconnect()--> absent

A step the table does not allow is the client's fault when the client took it (a second
CONNECT: :class:`~.errors.DecodeError`, the connection is closed) and a bug when the server
did (accepting a namespace nobody asked for: :class:`~.errors.NotConnected`).

Leaving the last namespace does not close the Engine.IO connection (as in the
reference server: the client may connect again).

Heartbeat (Engine.IO v4: the server pings)::

    open ──ping_interval──► "2" sent ──ping_timeout──► Closed("ping timeout")
                                  └─ "3" received ──ping_interval──► next "2" ...

Engine.IO v3 (``eio=3``, Socket.IO v2 clients, when the gateway allows them) turns it
round: the client pings, the server answers "3", and a client silent for ping_interval +
ping_timeout is gone. Its Socket.IO layer (protocol revision 4) differs too: the client is
connected to ``/`` without asking (:meth:`Connection.start` asks on its behalf, with the
handshake's query as auth), a CONNECT names its auth in the namespace's query string
(``0/chat?token=…,``), the accept carries no payload (``40/chat,``) and a refusal is a
plain string (``44/chat,"Not authorized"``).

Connect timeout: if no namespace has been *accepted* ``connect_timeout`` seconds after
the OPEN, the connection is closed (``Closed("connect timeout")``).  Like the reference
server it only applies to the first namespace and counts accepted namespaces, so an
authentication that never completes does not keep the socket open forever.

Closing: over WebSocket an Engine.IO server sends no CLOSE packet, it just closes the
socket, so :meth:`Connection.close` queues nothing.  Errors caused by the client
surface once as :class:`Closed` with ``error=True``; afterwards every input is
ignored and every server action is a no-op (races with a closing socket are normal in
asynchronous code and must not raise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from .engineio import EioType, encode_open, packet_type
from .errors import DecodeError, NotConnected, PayloadTooLarge, ProtocolError
from .events import (
    AckReceived,
    Closed,
    ConnectRequested,
    DisconnectRequested,
    Event,
    EventReceived,
)
from .socketio import Decoder, Packet, PacketType, encode_event_frames, encode_frames
from .states import NS_TRANSITIONS, REMOTE_STEPS, NsState, NsStep

__all__ = [
    "NS_TRANSITIONS",
    "AckReceived",
    "Closed",
    "ConnectRequested",
    "Connection",
    "ConnectionConfig",
    "DisconnectRequested",
    "Event",
    "EventReceived",
    "NsState",
    "NsStep",
]


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    """Protocol settings; durations in seconds, sizes in bytes.

    ``max_payload`` bounds one WebSocket frame and the attachments of one binary
    packet.  ``max_attachments`` bounds the attachment count of one packet and
    ``max_namespaces`` the connected + pending namespaces of one connection.
    """

    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int = 1_000_000
    connect_timeout: float = 45.0
    max_attachments: int = 16
    max_namespaces: int = 64


# --------------------------------------------------------------------- connection


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class Connection:
    """Protocol state of one client WebSocket (see the module docstring)."""

    # Tens of thousands of these live at once: no __dict__, the namespace states share
    # one dict (absent ones have no entry) and timers are plain floats.
    __slots__ = (
        "_closed",
        "_config",
        "_connect_deadline",
        "_decoder",
        "_eio",
        "_namespaces",
        "_outgoing",
        "_ping_at",
        "_pong_deadline",
        "_sid",
    )

    def __init__(
        self,
        sid: str,
        config: ConnectionConfig,
        now: float,
        upgrades: tuple[str, ...] = (),
        send_open: bool = True,
        eio: int = 4,
    ) -> None:
        """``upgrades`` is advertised in the OPEN packet (``("websocket",)`` for a session
        opened by long-polling). ``send_open=False`` for a session another gateway opened
        and handed over: the client has its OPEN already. ``eio``: the Engine.IO revision
        (4, or 3 for Socket.IO v2 clients)."""
        if eio not in (3, 4):
            raise ValueError("Engine.IO revision 3 or 4")
        self._eio = eio
        self._sid = sid
        self._config = config
        self._decoder = Decoder(config.max_attachments, config.max_payload)
        self._namespaces: dict[str, NsState] = {}
        self._outgoing: list[str | bytes] = [
            encode_open(
                sid, _ms(config.ping_interval), _ms(config.ping_timeout), config.max_payload,
                upgrades,
            )
        ] if send_open else []
        self._closed = False
        self._ping_at: float | None = now + config.ping_interval if eio == 4 else None
        # v3: the deadline of the client's next ping.
        self._pong_deadline: float | None = (
            None if eio == 4 else now + config.ping_interval + config.ping_timeout)
        self._connect_deadline: float | None = now + config.connect_timeout

    # ---------------------------------------------------------------- properties

    @property
    def sid(self) -> str:
        """The Engine.IO session id."""
        return self._sid

    @property
    def config(self) -> ConnectionConfig:
        return self._config

    @property
    def eio(self) -> int:
        """The Engine.IO revision the client speaks (4, or 3)."""
        return self._eio

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def namespaces(self) -> frozenset[str]:
        """Connected (accepted) namespaces.  Kept as-is once closed, for cleanup."""
        return frozenset(ns for ns, st in self._namespaces.items() if st is NsState.CONNECTED)

    @property
    def pending(self) -> frozenset[str]:
        """Namespaces whose CONNECT awaits accept() or refuse()."""
        return frozenset(ns for ns, st in self._namespaces.items() if st is NsState.PENDING)

    def is_connected(self, namespace: str) -> bool:
        """Cheaper than ``namespace in conn.namespaces``."""
        return self._namespaces.get(namespace) is NsState.CONNECTED

    def state(self, namespace: str) -> NsState:
        return self._namespaces.get(namespace, NsState.ABSENT)

    # ------------------------------------------------------------------- input

    def receive_frame(self, data: str | bytes | bytearray | memoryview, now: float) -> list[Event]:
        """Process one WebSocket message from the client."""
        if self._closed:
            return []
        try:
            if isinstance(data, str):
                return self._receive_text(data, now)
            if not isinstance(data, bytes):
                data = bytes(data)
            if len(data) > self._config.max_payload:
                raise PayloadTooLarge("frame too large")
            packet = self._decoder.feed_binary(data)
            return [] if packet is None else self._on_packet(packet)
        except ProtocolError as exc:
            return self._fail(exc.reason)

    def _receive_text(self, data: str, now: float) -> list[Event]:
        limit = self._config.max_payload
        size = len(data)
        # The limit is in bytes.  ASCII (O(1) to test) has one byte per character
        # and UTF-8 needs at most four, so encoding is rarely needed.
        if size > limit or (
            size * 4 > limit
            and not data.isascii()
            and len(data.encode("utf-8", "surrogatepass")) > limit
        ):
            raise PayloadTooLarge("frame too large")
        kind = packet_type(data)
        if kind is EioType.MESSAGE:
            packet = self._decoder.feed_text(data[1:])
            return [] if packet is None else self._on_packet(packet)
        if kind is EioType.PONG:
            # Unsolicited pongs are harmless and must not postpone the next ping.
            if self._pong_deadline is not None and self._eio == 4:
                self._pong_deadline = None
                self._ping_at = now + self._config.ping_interval
            return []
        if kind is EioType.PING:
            self._outgoing.append("3" + data[1:])
            if self._eio == 3:
                cfg = self._config
                self._pong_deadline = now + cfg.ping_interval + cfg.ping_timeout
            return []
        if kind is EioType.CLOSE:
            self._mark_closed()
            return [Closed("client close", False)]
        if kind is EioType.NOOP:
            return []
        raise DecodeError("unexpected Engine.IO packet from client")  # OPEN, UPGRADE

    def start(self, auth: dict[str, Any] | None = None) -> list[Event]:
        """Call once the OPEN is on its way: an Engine.IO v3 client is connected to ``/``
        without asking, so this asks on its behalf (``auth``: the handshake's query);
        nothing for v4."""
        if self._eio == 4 or self._closed or "/" in self._namespaces:
            return []
        self._step("/", NsStep.CONNECT)
        return [ConnectRequested("/", dict(auth or {}))]

    def _on_packet(self, packet: Packet) -> list[Event]:
        namespace = packet.namespace
        ptype = packet.type
        if ptype is PacketType.CONNECT:
            auth = packet.data if packet.data is not None else {}
            if self._eio == 3:
                namespace, _, query = namespace.partition("?")
                auth = {**dict(parse_qsl(query)), **auth}
            state = self._namespaces.get(namespace)
            if len(self._namespaces) >= self._config.max_namespaces and state is None:
                raise PayloadTooLarge("too many namespaces")
            self._step(namespace, NsStep.CONNECT)
            return [ConnectRequested(namespace, auth)]
        state = self._namespaces.get(namespace)
        if state is not NsState.CONNECTED:
            # A client may still be emitting right after a refusal or a server-side
            # disconnect; dropping is friendlier than killing its other namespaces.
            return []
        if ptype is PacketType.EVENT or ptype is PacketType.BINARY_EVENT:
            data = packet.data
            return [EventReceived(namespace, data[0], data[1:], packet.id)]
        if ptype is PacketType.ACK or ptype is PacketType.BINARY_ACK:
            assert packet.id is not None  # the decoder requires it
            return [AckReceived(namespace, packet.id, packet.data)]
        # DISCONNECT (CONNECT_ERROR is rejected by the server-side decoder)
        self._step(namespace, NsStep.LEAVE)
        return [DisconnectRequested(namespace)]

    def tick(self, now: float) -> list[Event]:
        """Run the timers; call at (or after) :meth:`next_deadline`."""
        if self._closed:
            return []
        if self._pong_deadline is not None and now >= self._pong_deadline:
            return self._fail("ping timeout")
        if self._connect_deadline is not None and now >= self._connect_deadline:
            return self._fail("connect timeout")
        if self._ping_at is not None and now >= self._ping_at:
            self._outgoing.append("2")
            self._ping_at = None
            self._pong_deadline = now + self._config.ping_timeout
        return []

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do; ``None`` once closed."""
        if self._closed:
            return None
        deadlines = [
            d for d in (self._ping_at, self._pong_deadline, self._connect_deadline) if d is not None
        ]
        return min(deadlines) if deadlines else None

    def connection_lost(self, reason: str = "transport close") -> list[Event]:
        """Tell the state machine the WebSocket went away without a CLOSE packet.

        Returns ``[Closed(reason, error=False)]`` unless already closed, so that all
        endings reach the application the same way.
        """
        if self._closed:
            return []
        self._mark_closed()
        return [Closed(reason, False)]

    # ----------------------------------------------------------------- actions

    def accept(self, namespace: str, sid: str, pid: str | None = None) -> None:
        """Accept a pending namespace: queues ``40[/ns,]{"sid":…}``, with ``"pid"`` when the
        namespace has connection state recovery (Socket.IO 4.6)."""
        if self._closed:
            return
        self._step(namespace, NsStep.ACCEPT)
        self._connect_deadline = None
        data: dict[str, str] | None = None
        if self._eio == 4:
            data = {"sid": sid, "pid": pid} if pid else {"sid": sid}
        self._outgoing.extend(encode_frames(Packet(PacketType.CONNECT, namespace, data)))

    def refuse(self, namespace: str, message: str, data: Any = None) -> None:
        """Refuse a pending namespace: queues ``44[/ns,]{"message":…[,"data":…]}``."""
        if self._closed:
            return
        self._step(namespace, NsStep.REFUSE)
        payload: dict[str, Any] | str
        if self._eio == 3:
            # What a v2 client shows as the error: Node sends ``err.data || err.message``.
            payload = data if isinstance(data, str | dict) and data else message
        else:
            payload = {"message": message}
            if data is not None:
                payload["data"] = data
        self._outgoing.extend(encode_frames(Packet(PacketType.CONNECT_ERROR, namespace, payload)))

    def send_event(
        self, namespace: str, event: str, args: list[Any], ack_id: int | None = None
    ) -> None:
        """Queue an event (binary args become a BINARY_EVENT)."""
        if self._closed:
            return
        self._require_connected(namespace)
        if ack_id is None:
            frames = encode_event_frames(namespace, event, args)
        else:
            frames = encode_frames(Packet(PacketType.EVENT, namespace, [event, *args], ack_id))
        self._outgoing.extend(frames)

    def send_ack(self, namespace: str, ack_id: int, args: list[Any]) -> None:
        """Queue the acknowledgement of client event ``ack_id``."""
        if self._closed:
            return
        self._require_connected(namespace)
        self._outgoing.extend(encode_frames(Packet(PacketType.ACK, namespace, list(args), ack_id)))

    def send_frames(self, frames: list[str | bytes]) -> None:
        """Queue pre-encoded frames (fan-out); they are not inspected."""
        if self._closed:
            return
        self._outgoing.extend(frames)

    def disconnect(self, namespace: str) -> None:
        """Server-side kick from a namespace: queues ``41[/ns,]``."""
        if self._closed:
            return
        self._step(namespace, NsStep.KICK)
        self._outgoing.extend(encode_frames(Packet(PacketType.DISCONNECT, namespace)))

    def close(self, reason: str) -> None:
        """Close the connection from the server side.

        Queues nothing (an Engine.IO server simply closes the WebSocket; use
        ``reason`` as the close reason) and produces no :class:`Closed` event, since
        the caller already knows.  Call :meth:`disconnect` first for the namespaces
        that should see "io server disconnect" (the client will then not reconnect);
        without it the client sees "transport close" and reconnects.
        """
        self._mark_closed()

    def data_to_send(self) -> list[str | bytes]:
        """Return and clear the queued frames, in order."""
        out = self._outgoing
        self._outgoing = []
        return out

    # ---------------------------------------------------------------- internals

    def _require_connected(self, namespace: str) -> None:
        if self._namespaces.get(namespace) is not NsState.CONNECTED:
            raise NotConnected("namespace not connected")

    def _step(self, namespace: str, step: NsStep) -> None:
        """Apply ``step`` to ``namespace`` by :data:`NS_TRANSITIONS`, or refuse it."""
        state = self._namespaces.get(namespace, NsState.ABSENT)
        new = NS_TRANSITIONS.get((state, step))
        if new is None:
            if step in REMOTE_STEPS:
                raise DecodeError("namespace already connected" if state is NsState.CONNECTED
                                  else "namespace connection pending")
            raise NotConnected("namespace not pending" if step is not NsStep.KICK
                               else "namespace not connected")
        if new is NsState.ABSENT:
            del self._namespaces[namespace]
        else:
            self._namespaces[namespace] = new

    def _mark_closed(self) -> None:
        self._closed = True
        self._ping_at = self._pong_deadline = self._connect_deadline = None
        self._decoder.reset()

    def _fail(self, reason: str) -> list[Event]:
        self._mark_closed()
        return [Closed(reason, True)]
