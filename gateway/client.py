"""One Engine.IO session: the sans-I/O :class:`~gateway.protocol.Connection` plus the thin
I/O around it (writes over its transport, a timer, an ordered work :class:`~.lane.Lane`).

The transport is a WebSocket (:class:`~gateway.transport.WsTransport`) or HTTP
long-polling (a :class:`~gateway.protocol.polling.Polling` state machine and the GET
waiting for data, if any); a session opened by polling switches to WebSocket in place when
it upgrades, so the sockets that point at this object never notice.

WebSocket output goes straight to the transport as pre-encoded frames (see
:mod:`gateway.wsframe`): fan-out writes the same bytes to every member without a task, a
queue or a per-socket encode. The transport's buffer is the only queue; a client whose
buffer grows past ``write_limit`` bytes is too slow and is disconnected, which bounds the
memory one reader that stopped reading can cost. Polling output queues in the ``Polling``
object under the same bound and leaves with the next GET.

Nothing here decides anything about namespaces or events: that is :mod:`gateway.server`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from switchboard.gateway import wsframe
from switchboard.gateway.lane import Lane
from switchboard.gateway.protocol import Connection
from switchboard.gateway.protocol.engineio import V3_BINARY_PREFIX, decode_v3_packet
from switchboard.gateway.protocol.errors import DecodeError
from switchboard.gateway.protocol.polling import Polling
from switchboard.gateway.transport import WsTransport
from switchboard.shared.envelope import Session

#: Seconds a polling session closed by the server waits for the poll that takes its CLOSE.
CLOSE_TIMEOUT = 30.0


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


class Responder(Protocol):
    """Where the answer to a waiting long-polling GET goes (a local HTTP exchange, or a
    peer gateway that forwarded the request)."""

    def respond(self, body: str) -> None: ...


class SessionOwner(Protocol):
    """Where a session's WebSocket messages and endings go (the gateway, or an echo host)."""

    def on_message(self, client: Client, message: str | bytes) -> None: ...

    def client_lost(self, client: Client, reason: str) -> None: ...

    def bad_input(self, client: Client, reason: str, code: int) -> None: ...


class CloseMode(Enum):
    """How a session ends, which decides what a waiting poll is told (see Polling)."""

    ABORT = "abort"  #: an error or timeout: at once
    GRACEFUL = "graceful"  #: the server closes: after what is queued
    CLIENT = "client"  #: the client asked


class Corker:
    """Clients with frames queued this loop iteration; writes them all once, soon after."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Client] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, client: Client) -> None:
        self._dirty.append(client)
        if not self._scheduled:
            self._scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for client in dirty:
            client.write_pending()


class Client:
    __slots__ = (
        "_poll_dirty",
        "_timer",
        "address",
        "closing",
        "conn",
        "corker",
        "headers",
        "lane",
        "link",
        "lost",
        "on_finished",
        "on_slow",
        "pending",
        "polling",
        "responder",
        "sockets",
        "started",
        "transport",
        "write_limit",
    )

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
        self.link: WsTransport | None = None  # see attach()
        self.transport: asyncio.Transport | None = None
        #: The polling side while the session polls (None once on WebSocket).
        self.polling = polling
        #: The GET waiting for data (polling only).
        self.responder: Responder | None = None
        #: Called once a polling session is over (so its sid is forgotten).
        self.on_finished: Callable[[Client], None] | None = None
        self.lost = False
        self.started = time.monotonic()
        self.conn = conn
        self.address = address
        self.headers = headers
        self.sockets: dict[str, NsSocket] = {}
        self.write_limit = write_limit
        self.on_slow = on_slow
        self.corker = corker
        self.pending: list[bytes] | None = None
        self.closing = False
        self._poll_dirty = False
        #: The packets' ordered work (``client.lane.submit``).
        self.lane = Lane(conn.sid, self._pause_reading, self._resume_reading)
        self._timer: asyncio.TimerHandle | None = None

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

    def allow_buffering(self, limit: int) -> None:
        """Let this connection hold up to ``limit`` unsent bytes (at least)."""
        self.write_limit = max(self.write_limit, limit)

    def owned_by(self, on_finished: Callable[[Client], None] | None) -> None:
        """Who hears, once, that the session is over (:meth:`finish`); None: nobody."""
        self.on_finished = on_finished

    def mark_lost(self) -> bool:
        """The connection is gone; False when that was known already."""
        if self.lost:
            return False
        self.lost = True
        return True

    def take_responder(self) -> Responder | None:
        """The waiting GET, which the caller answers (or gives up) itself."""
        responder, self.responder = self.responder, None
        return responder

    def switch_to_websocket(self, link: WsTransport, owner: SessionOwner) -> None:
        """The upgrade completed: the session goes on over ``link``."""
        self.polling = None
        self.attach(link, owner)

    @property
    def transport_name(self) -> str:
        return "polling" if self.polling is not None else "websocket"

    def attach(self, link: WsTransport, owner: SessionOwner) -> None:
        """Make ``link`` the session's transport (a new WebSocket, or the upgrade); its
        messages and its end go to ``owner``."""
        assert link.transport is not None
        self.link = link
        self.transport = link.transport
        link.before_send = self.write_pending
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

    # -- output ------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue pre-encoded WebSocket frames for this loop iteration's write; a client too
        slow to keep up is disconnected. (Polling sessions take :meth:`queue` instead.)

        Everything written to one client during one event-loop iteration leaves in one
        ``transport.write`` (see :class:`Corker`): a send system call costs more than the
        rest of a delivery, and under load several messages for a socket arrive per
        iteration. An idle gateway still writes at once (the next iteration).
        """
        pending = self.pending
        if pending is not None:
            # Checked when the first frame was queued; a close frame flushes what is
            # queued before it (``WsTransport._send_pending``), so nothing follows it.
            pending.append(data)
            return
        link = self.link
        if self.closing or link is None or not link.is_open:
            return
        transport = self.transport
        assert transport is not None
        if transport.get_write_buffer_size() > self.write_limit:
            self.closing = True
            self.on_slow(self)
            return
        self.pending = [data]
        self.corker.add(self)

    def queue(self, packets: list[str | bytes]) -> None:
        """Queue Engine.IO packets for the next poll (polling sessions)."""
        polling = self.polling
        assert polling is not None
        if self.closing:
            return
        polling.send(packets)
        if polling.buffered > self.write_limit:
            self.closing = True
            self.on_slow(self)
            return
        if not self._poll_dirty and self.responder is not None:
            self._poll_dirty = True
            self.corker.add(self)

    def send_frames(self, frames: list[str | bytes]) -> None:
        """Engine.IO packets for this session, whatever its transport."""
        if self.polling is None:
            if self.conn.eio == 3:
                frames = [f if isinstance(f, str) else V3_BINARY_PREFIX + f for f in frames]
            self.write(b"".join(wsframe.encode(f) for f in frames))
        else:
            self.queue(frames)

    def write_pending(self) -> None:
        pending = self.pending
        if pending is not None:
            self.pending = None
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if self._poll_dirty:
            self._poll_dirty = False
            self.answer_poll()

    def answer_poll(self) -> None:
        """Answer the waiting GET if there is something to say (polling)."""
        polling, responder = self.polling, self.responder
        if polling is None or responder is None:
            return
        body = polling.flush()
        if body is None:
            return
        self.responder = None
        responder.respond(body)
        if polling.finished:
            self.finish()

    def wait_poll(self, responder: Responder) -> None:
        """A GET waits for data: answered by :meth:`answer_poll`, soon or at the next ping."""
        self.responder = responder

    def flush(self) -> None:
        """Write what the protocol queued (handshake, acks, emits, pings)."""
        frames = self.conn.data_to_send()
        if frames:
            self.send_frames(frames)

    @property
    def buffered(self) -> int:
        if self.polling is not None:
            return self.polling.buffered
        queued = sum(map(len, self.pending)) if self.pending else 0
        transport = self.transport
        return (int(transport.get_write_buffer_size()) if transport is not None else 0) + queued

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until everything written has been handed to the kernel (or, when
        polling, taken by a GET)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.buffered and loop.time() < deadline and not self.lost:
            transport = self.transport
            if self.polling is None and (transport is None or transport.is_closing()):
                return
            await asyncio.sleep(0.005)

    def close(self, code: int, reason: str, mode: CloseMode = CloseMode.GRACEFUL) -> None:
        """End the transport: a WebSocket closing handshake with ``code``, or for polling
        what ``mode`` says a waiting poll is told."""
        polling = self.polling
        if polling is None:
            if self.link is not None:
                self.link.close(code, reason)
            return
        if mode is CloseMode.ABORT:
            body = polling.abort()
        elif mode is CloseMode.CLIENT:
            body = polling.client_closed()
        else:
            body = polling.close()
        responder, self.responder = self.responder, None
        if body is not None and responder is not None:
            responder.respond(body)
        elif responder is not None:
            self.responder = responder  # still waiting: a graceful close leaves later
        if polling.finished:
            self.finish()
        elif self._timer is None or mode is CloseMode.GRACEFUL:
            # The CLOSE waits for the client's next poll, but not for ever.
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(
                CLOSE_TIMEOUT, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._timer = None
        if self.polling is not None:
            self.polling.abort()
        self.finish()

    def finish(self) -> None:
        """The polling session is over: tell whoever owns it (once)."""
        callback, self.on_finished = self.on_finished, None
        if callback is not None:
            callback(self)

    @property
    def busy(self) -> bool:
        return self.lane.inflight > 0

    def _pause_reading(self) -> None:
        if self.polling is None and self.transport is not None:
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    # -- timers ------------------------------------------------------------------------------
    def schedule(self, callback: Callable[[], Any]) -> None:
        deadline = self.conn.next_deadline()
        polling = self.polling
        if polling is not None:
            held = polling.next_deadline()
            if held is not None and (deadline is None or held < deadline):
                deadline = held
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        if deadline is not None and not self.conn.closed:
            self._timer = asyncio.get_running_loop().call_at(deadline, callback)

    def shut(self, reason: str) -> None:
        """The connection is lost: stop, and abort a polling transport still open."""
        self.stop()
        if self.polling is not None and not self.polling.finished:
            self.close(1000, reason, CloseMode.ABORT)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # The lane is not cancelled: work in flight finishes and sees ``conn.closed``, so
        # services that accepted a half-done CONNECT still hear the DISCONNECT.
