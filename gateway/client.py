"""One Engine.IO session (:class:`Client`) and its namespace sockets (:class:`NsSocket`):
the sans-I/O :class:`~gateway.protocol.Connection` with the I/O around it (its way out, an
:class:`~.output.Output`; a timer; an ordered work :class:`~.lane.Lane`). Only this module
writes a Client's or a socket's state, through methods named for what happens.

The transport is a WebSocket (:class:`~gateway.transport.WsTransport`) or HTTP
long-polling (a :class:`~gateway.protocol.polling.Polling` state machine and the GET
waiting for data, if any); a session opened by polling switches to WebSocket in place when
it upgrades, so the sockets that point at this object never notice.

Nothing here decides anything about namespaces or events: that is the pipelines' job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from switchboard.gateway.lane import Lane
from switchboard.gateway.output import CloseMode, Corker, Output
from switchboard.gateway.protocol import Connection
from switchboard.gateway.protocol.engineio import V3_BINARY_PREFIX, decode_v3_packet
from switchboard.gateway.protocol.errors import DecodeError
from switchboard.gateway.protocol.polling import Polling
from switchboard.gateway.transport import WsTransport
from switchboard.shared.envelope import Session


@dataclass(eq=False, slots=True)
class NsSocket:
    """One Socket.IO socket: a client's membership in one namespace."""

    session: Session
    client: Client
    rooms: set[str] = field(default_factory=set)
    #: False until the CONNECT ack is written: fan-out skips it, so nothing reaches a
    #: namespace before its CONNECT ack (it is indexed earlier to subscribe in time).
    live: bool = False
    #: Server→client acks awaited: ack id → the event the client's ack becomes.
    acks: dict[int, str] | None = None
    next_ack: int = 0
    #: Connection state recovery (gateway.recovery): the socket's recovery id ("" when its
    #: namespace has none), the offset of the last logged event written to it (events not
    #: in the log carry it too, so the client's position stays), and after a recovery the
    #: publishers' numbers at or below which live publications were replayed already.
    pid: str = ""
    offset: str = "0"
    floor: dict[str, int] | None = None

    # -- what happens to it (the only writers of its fields) --------------------------------
    def go_live(self) -> None:
        """Its CONNECT ack is written: fan-out reaches it from now on."""
        self.live = True

    def renew_session(self, session: Session) -> None:
        """A service's reply (or a new transport) changed the session."""
        self.session = session

    def enter(self, room: str) -> bool:
        """Record a join (False: it was in the room already). :class:`LocalIndex` calls it."""
        if room in self.rooms:
            return False
        self.rooms.add(room)
        return True

    def exit(self, room: str) -> bool:
        """Record a leave (False: it was not in the room)."""
        if room not in self.rooms:
            return False
        self.rooms.discard(room)
        return True

    def recover(self, pid: str) -> None:
        """Its recovery id (a new one when what it missed is unknown)."""
        self.pid = pid

    def resume(self, offset: str, floor: dict[str, int] | None) -> None:
        """After a replay: its position, and the publishers' numbers already replayed."""
        self.offset = offset
        self.floor = floor or None

    def delivered(self, offset: str) -> None:
        """A logged event at ``offset`` was written to it: the client's position."""
        self.offset = offset

    def take_ack(self, ack_id: int) -> str | None:
        """The event a client's ack for ``ack_id`` becomes (None: not one it was asked)."""
        return self.acks.pop(ack_id, None) if self.acks else None

    def send_event(self, event: str, args: list[Any], ack_event: str = "") -> None:
        """An event for this socket; with ``ack_event`` the client's ack comes back as it."""
        if ack_event:
            self.client.conn.send_event(self.ns, event, args, self.expect_ack(ack_event))
        else:
            self.client.conn.send_event(self.ns, event, self.tail(args))

    def send_logged(self, event: str, args: list[Any], offset: str) -> None:
        """An event from the recovery log: its offset last, and the socket's position."""
        self.client.conn.send_event(self.ns, event, [*args, offset])
        self.offset = offset

    def tail(self, args: list[Any]) -> list[Any]:
        """An event's arguments as this socket gets them: with the offset last when its
        namespace has recovery (the Socket.IO 4.6 wire format)."""
        return [*args, self.offset] if self.pid else args

    def expect_ack(self, ack_event: str, limit: int = 1000) -> int | None:
        """Allocate an ack id for an emit whose ack returns as ``ack_event`` (bounded)."""
        if self.acks is None:
            self.acks = {}
        if len(self.acks) >= limit:
            return None
        self.next_ack += 1
        self.acks[self.next_ack] = ack_event
        return self.next_ack

    @property
    def sid(self) -> str:
        return self.session.sid

    @property
    def ns(self) -> str:
        return self.session.ns


class SessionOwner(Protocol):
    """Where a session's WebSocket messages and endings go (the gateway, or an echo host)."""

    def on_message(self, client: Client, message: str | bytes) -> None: ...

    def client_lost(self, client: Client, reason: str) -> None: ...

    def bad_input(self, client: Client, reason: str, code: int) -> None: ...


class Client(Output):
    __slots__ = ("address", "conn", "headers", "lane", "on_finished", "sockets", "started")

    def __init__(
        self,
        conn: Connection,
        address: str,
        headers: dict[str, str],
        write_limit: int,
        on_slow: Callable[[Client], None],
        corker: Corker,
        polling: Polling | None = None,
    ) -> None:
        super().__init__(write_limit, lambda: on_slow(self), corker, polling, conn.eio)
        #: Called once the session is over, whatever its transport (its owner forgets it).
        self.on_finished: Callable[[Client], None] | None = None
        self.started = time.monotonic()
        self.conn = conn
        self.address = address
        self.headers = headers
        self.sockets: dict[str, NsSocket] = {}
        #: The packets' ordered work (``client.lane.submit``).
        self.lane = Lane(conn.sid, self._pause_reading, self._resume_reading)

    # -- its namespace sockets, and what happens to it (the only writers of its fields) -----
    def socket(self, ns: str) -> NsSocket | None:
        return self.sockets.get(ns)

    def has(self, sock: NsSocket) -> bool:
        """Whether ``sock`` is still this connection's socket of its namespace."""
        return self.sockets.get(sock.ns) is sock

    def add_socket(self, sock: NsSocket) -> None:
        self.sockets[sock.ns] = sock

    def remove_socket(self, sock: NsSocket) -> bool:
        """Take ``sock`` out (False: it was not this connection's socket any more)."""
        if self.sockets.get(sock.ns) is not sock:
            return False
        del self.sockets[sock.ns]
        return True

    def owned_by(self, on_finished: Callable[[Client], None] | None) -> None:
        """Who hears, once, that the session is over (:meth:`finish`); None: nobody."""
        self.on_finished = on_finished

    def switch_to_websocket(self, link: WsTransport, owner: SessionOwner) -> None:
        """The upgrade completed: the session goes on over ``link``."""
        self.leave_polling()
        self.attach(link, owner)

    def attach(self, link: WsTransport, owner: SessionOwner) -> None:
        """Make ``link`` the session's transport (a new WebSocket, or the upgrade); its
        messages and its end go to ``owner``."""
        self.use(link)
        if self.conn.eio == 3:
            link.on_message = lambda message: self._v3_message(owner, message)
        else:
            link.on_message = lambda message: owner.on_message(self, message)
        link.on_end = lambda reason: owner.client_lost(self, reason)
        link.on_bad = lambda reason, code: owner.bad_input(self, reason, code)

    def _v3_message(self, owner: SessionOwner, message: str | bytes) -> None:
        """An Engine.IO v3 WebSocket message: a binary one carries its packet type first."""
        if isinstance(message, str):
            if message[:1] == "b":  # binary as base64 (engine.io-client's forceBase64)
                try:
                    owner.on_message(self, decode_v3_packet(message))
                except DecodeError as exc:
                    owner.bad_input(self, exc.reason, 1002)
            else:
                owner.on_message(self, message)
        elif message[:1] == V3_BINARY_PREFIX:
            owner.on_message(self, message[1:])
        else:
            owner.bad_input(self, "binary frame that is not a MESSAGE", 1002)

    def flush(self) -> None:
        """Write what the protocol queued (handshake, acks, emits, pings)."""
        frames = self.conn.data_to_send()
        if frames:
            self.send_frames(frames)

    def finish(self) -> None:
        """The session is over (lost, closed, or a polling session finished): tell whoever
        owns it, once."""
        callback, self.on_finished = self.on_finished, None
        if callback is not None:
            callback(self)

    @property
    def busy(self) -> bool:
        return self.lane.inflight > 0

    # -- timers ------------------------------------------------------------------------------
    def schedule(self, callback: Callable[[], Any]) -> None:
        deadline = self.conn.next_deadline()
        polling = self.polling
        if polling is not None:
            held = polling.next_deadline()
            if held is not None and (deadline is None or held < deadline):
                deadline = held
        self.arm(None if self.conn.closed else deadline, callback)

    def shut(self, reason: str) -> None:
        """The connection is lost: stop, and abort a polling transport still open."""
        self.stop()
        if self.polling is not None and not self.polling.finished:
            self.close(1000, reason, CloseMode.ABORT)

    def stop(self) -> None:
        self.disarm()
        # The lane is not cancelled: work in flight finishes and sees ``conn.closed``, so
        # services that accepted a half-done CONNECT still hear the DISCONNECT.
