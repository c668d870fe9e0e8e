"""Local fan-out state: which of this gateway's sockets are in which rooms, and the SUB
socket whose subscriptions follow that index (a room topic is subscribed while at least one
local socket is in the room, and only then)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import zmq
import zmq.asyncio

from switchboard.shared import topics
from switchboard.shared.envelope import Session
from switchboard.shared.loopsocket import LoopSocket, plain_socket

if TYPE_CHECKING:
    from switchboard.gateway.client import Client

log = logging.getLogger("switchboard.gateway.fanout")

#: Namespace of a publication that targets socket ids in whatever namespace they are.
ANY_NAMESPACE = "*"


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


class Subscriptions:
    """A SUB socket with reference-counted topics and broker-confirmed subscribing.

    Every message received goes to ``on_message(frames)`` (see :class:`LoopSocket`), from
    :meth:`start` on.
    """

    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoint: str,
        on_message: Callable[[list[bytes]], None],
        hwm: int = 100_000,
    ) -> None:
        sub = plain_socket(context, zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, hwm)
        sub.setsockopt(zmq.RECONNECT_IVL, 100)
        sub.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        # ZeroMQ-level heartbeats: a half-open TCP connection to a vanished broker is
        # dropped and re-dialled, and subscriptions are re-sent on the new connection.
        sub.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sub.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        sub.connect(endpoint)
        self.socket = LoopSocket(sub, on_message)
        self.endpoint = endpoint
        self.counts: dict[bytes, int] = {}
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}

    def add(self, topic: bytes) -> asyncio.Future[None] | None:
        """Reference the topic; returns a future resolved when the broker has it in force.

        None when it already is. A second reference while the first subscription is still
        unconfirmed waits for that same confirmation (its ack must not overtake it).
        """
        count = self.counts.get(topic, 0)
        self.counts[topic] = count + 1
        if count and topic not in self._waiters:
            return None
        if not count:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(topic, []).append(future)
        return future

    def remove(self, topic: bytes) -> None:
        count = self.counts.get(topic, 0) - 1
        if count > 0:
            self.counts[topic] = count
            return
        self.counts.pop(topic, None)
        if count == 0:
            self.socket.setsockopt(zmq.UNSUBSCRIBE, topic)

    def confirmed(self, topic: bytes) -> None:
        for future in self._waiters.pop(topic, ()):
            if not future.done():
                future.set_result(None)

    def start(self) -> None:
        self.socket.start()

    def close(self) -> None:
        self.socket.close()


class LocalIndex:
    """Namespaces and rooms → local sockets; drives :class:`Subscriptions`."""

    def __init__(self, subscriptions: Subscriptions) -> None:
        self.subs = subscriptions
        self.by_sid: dict[str, NsSocket] = {}
        self.namespaces: dict[str, set[NsSocket]] = {}
        self.rooms: dict[tuple[str, str], set[NsSocket]] = {}

    def add(self, sock: NsSocket) -> asyncio.Future[None] | None:
        self.by_sid[sock.sid] = sock
        members = self.namespaces.setdefault(sock.ns, set())
        members.add(sock)
        return self.subs.add(topics.namespace(sock.ns))

    def remove(self, sock: NsSocket) -> None:
        if self.by_sid.pop(sock.sid, None) is None:
            return
        for room in list(sock.rooms):
            self.leave(sock, room)
        members = self.namespaces.get(sock.ns)
        if members is not None:
            members.discard(sock)
            if not members:
                del self.namespaces[sock.ns]
        self.subs.remove(topics.namespace(sock.ns))

    def join(self, sock: NsSocket, room: str) -> asyncio.Future[None] | None:
        if room in sock.rooms or sock.sid not in self.by_sid:
            return None
        try:
            topic = topics.room(sock.ns, room)
        except ValueError:  # a NUL in the name: refuse before any state changes
            log.warning("ignored join of %s to a room named with NUL", sock.sid)
            return None
        sock.rooms.add(room)
        self.rooms.setdefault((sock.ns, room), set()).add(sock)
        return self.subs.add(topic)

    def leave(self, sock: NsSocket, room: str) -> None:
        if room not in sock.rooms:
            return
        sock.rooms.discard(room)
        key = (sock.ns, room)
        members = self.rooms.get(key)
        if members is not None:
            members.discard(sock)
            if not members:
                del self.rooms[key]
        self.subs.remove(topics.room(sock.ns, room))

    def targets(
        self, ns: str, room: str | None, sids: Iterable[str], exclude: Iterable[str]
    ) -> list[NsSocket]:
        if sids:
            found = [self.by_sid[s] for s in sids if s in self.by_sid]
            if ns != ANY_NAMESPACE:  # a socket id names one namespace socket already
                found = [s for s in found if s.ns == ns]
        elif room is not None:
            found = list(self.rooms.get((ns, room), ()))
        else:
            found = list(self.namespaces.get(ns, ()))
        if exclude:
            excluded = set(exclude)
            return [s for s in found if s.live and s.sid not in excluded]
        return [s for s in found if s.live]


async def wait_all(futures: Iterable[asyncio.Future[None] | None], timeout: float) -> None:
    """Wait (bounded) for subscription confirmations; a lost one only logs."""
    pending = [f for f in futures if f is not None]
    if not pending:
        return
    _, not_done = await asyncio.wait(pending, timeout=timeout)
    if not_done:
        log.warning("%d subscription(s) not confirmed by the broker in %.1fs",
                    len(not_done), timeout)


