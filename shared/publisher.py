"""Publishing fan-out envelopes: what a service tells gateways to do with sockets.

Services receive a :class:`Publisher` through their constructor. :class:`ZmqPublisher`
sends on a PUB socket connected to the broker; :class:`MemoryPublisher` keeps what was
published in a list, for handler tests that call handlers directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import zmq
from prometheus_client import Counter

from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, Publication
from switchboard.shared.journal import Journal
from switchboard.shared.topics import broker_of

log = logging.getLogger(__name__)

PUBLISH_DROPS = Counter(
    "switchboard_publish_drops_total", "Publications dropped at the ZeroMQ high-water mark"
)


class Publisher:
    """Target helpers over one abstract :meth:`publish`; subclasses decide where it goes."""

    source: str = ""
    #: Number and remember what is published, for replays (services' publishers only): one
    #: per broker path.
    journals: tuple[Journal, ...] = ()

    def journal_of(self, origin: str) -> Journal | None:
        """The journal that numbers ``origin``'s publications, if it is this process's."""
        for journal in self.journals:
            if journal.origin == origin:
                return journal
        return None

    def publish(self, topic: bytes, publication: Publication) -> None:
        raise NotImplementedError

    # -- events --------------------------------------------------------------------------
    def emit_room(
        self, ns: str, room: str, event: str, args: list[Any], exclude: Iterable[str] = ()
    ) -> None:
        self.publish(
            topics.room(ns, room),
            Publication(PubKind.EMIT, ns, event, args, room=room, exclude=tuple(exclude),
                        source=self.source),
        )

    def emit_namespace(
        self, ns: str, event: str, args: list[Any], exclude: Iterable[str] = ()
    ) -> None:
        self.publish(
            topics.namespace(ns),
            Publication(PubKind.EMIT, ns, event, args, exclude=tuple(exclude), source=self.source),
        )

    def emit_user(
        self, ns: str, user_id: str, event: str, args: list[Any], exclude: Iterable[str] = ()
    ) -> None:
        """Every socket of ``user_id`` in ``ns``, on any gateway (its ``user:<id>`` room)."""
        self.emit_room(ns, topics.user_room(user_id), event, args, exclude)

    def emit_socket(
        self, sid: str, ns: str, event: str, args: list[Any], ack_event: str = ""
    ) -> None:
        """Emit to one socket; with ``ack_event`` its ack returns as that event."""
        self.publish(
            topics.socket(sid),
            Publication(PubKind.EMIT, ns, event, args, sids=(sid,), source=self.source,
                        ack_event=ack_event),
        )

    # -- membership and lifecycle ---------------------------------------------------------
    def join(self, sid: str, ns: str, room: str) -> None:
        self._to_socket(PubKind.JOIN, sid, ns, room=room)

    def leave(self, sid: str, ns: str, room: str) -> None:
        self._to_socket(PubKind.LEAVE, sid, ns, room=room)

    def disconnect_socket(
        self, sid: str, ns: str, event: str = "", args: list[Any] | None = None
    ) -> None:
        """Optionally emit ``event`` to the socket, then disconnect it from its namespace.

        ``ns`` may be ``*`` when the caller knows only the socket id (it names one
        namespace socket anyway)."""
        self._to_socket(PubKind.DISCONNECT, sid, ns, event=event, args=args or [])

    def disconnect_room(
        self, ns: str, room: str, event: str = "", args: list[Any] | None = None
    ) -> None:
        """Disconnect every member of ``room`` (e.g. ``user:<id>`` for a ban), after ``event``."""
        self.publish(
            topics.room(ns, room),
            Publication(PubKind.DISCONNECT, ns, event, args or [], room=room, source=self.source),
        )

    def resync(self) -> None:
        """Ask every gateway to send its sockets again (a stateful service restarted)."""
        self.publish(topics.ALL_GATEWAYS, Publication(PubKind.RESYNC, "", source=self.source))

    def _to_socket(
        self,
        kind: PubKind,
        sid: str,
        ns: str,
        event: str = "",
        args: list[Any] | None = None,
        room: str | None = None,
    ) -> None:
        self.publish(
            topics.socket(sid),
            Publication(kind, ns, event, args or [], room=room, sids=(sid,), source=self.source),
        )


class MemoryPublisher(Publisher):
    """Keeps publications in :attr:`published` (topic, publication), for handler tests."""

    def __init__(self, source: str = "test") -> None:
        self.source = source
        self.published: list[tuple[bytes, Publication]] = []

    def publish(self, topic: bytes, publication: Publication) -> None:
        self.published.append((topic, publication))

    def events(self, event: str | None = None) -> list[Publication]:
        return [
            p for _, p in self.published
            if p.kind == PubKind.EMIT and (event is None or p.event == event)
        ]


class _Path:
    """One broker of a publisher: the socket to it and, numbered, its own journal."""

    __slots__ = ("journal", "socket", "subscriptions")

    def __init__(self, socket: zmq.Socket[Any], journal: Journal | None) -> None:
        self.socket = socket
        self.journal = journal
        self.subscriptions = 0


class ZmqPublisher(Publisher):
    """XPUB sockets connected to the brokers' XSUB endpoints, one per broker.

    XPUB rather than PUB so that a broker's subscription (it subscribes to everything)
    arrives here as a message: :meth:`wait_ready` is a real readiness handshake instead of a
    sleep, and a broker restart shows up as a fresh subscription.

    With several brokers, each publication goes to the broker its topic lives on
    (:func:`~shared.topics.broker_of`), and each path is numbered on its own
    (:meth:`~shared.journal.Journal.for_path`).

    Publishing never blocks: at the high-water mark ZeroMQ drops, which is counted and logged
    rather than stalling a request handler. With a :class:`~shared.journal.Journal`, every
    publication is numbered and remembered, and :meth:`beat` publishes the beats by which
    gateways notice what a broker crash made them miss (docs/delivery.md).
    """

    def __init__(self, context: zmq.Context[Any], endpoints: str | Sequence[str], source: str,
                 hwm: int = 100_000, journal: Journal | None = None):
        self.source = source
        listed = (endpoints,) if isinstance(endpoints, str) else tuple(endpoints)
        if not listed:
            raise ValueError("a publisher needs at least one broker endpoint")
        # A plain (blocking-API) socket even when given an asyncio context: sends are
        # non-blocking anyway, and handlers publish without awaiting.
        sync_context: zmq.Context[Any] = zmq.Context.shadow(context.underlying)
        self.paths: list[_Path] = []
        for k, endpoint in enumerate(listed):
            sock: zmq.Socket[Any] = sync_context.socket(zmq.XPUB)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, hwm)
            sock.connect(endpoint)
            numbered = journal if journal is None or len(listed) == 1 else journal.for_path(k)
            self.paths.append(_Path(sock, numbered))
        self.journals = tuple(p.journal for p in self.paths if p.journal is not None)
        self.dropped = 0

    def subscribed(self) -> bool:
        """Whether every broker has subscribed to us (reading what they sent)."""
        self.drain_subscriptions()
        return all(path.subscriptions for path in self.paths)

    def wait_subscribed(self, timeout: float) -> bool:
        """Block (bounded) until every broker has subscribed to us; True when they have."""
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        for path in self.paths:
            poller.register(path.socket, zmq.POLLIN)
        while not self.subscribed():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller.poll(int(left * 1000) + 1)
        return True

    async def wait_ready(self, timeout: float) -> bool:
        """Wait (bounded) until every broker has subscribed to us; True when they have."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.subscribed():
                return True
            await asyncio.sleep(0.005)
        return False

    def drain_subscriptions(self) -> bool:
        """Read pending (un)subscribe messages from the brokers; True if any subscribe came."""
        seen = False
        for k, path in enumerate(self.paths):
            sock = path.socket
            while sock.poll(0, zmq.POLLIN):
                msg = sock.recv(zmq.NOBLOCK)
                if msg[:1] != b"\x01":
                    continue
                path.subscriptions += 1
                seen = True
                if path.subscriptions > 1 and path.journal is not None:
                    # A broker subscribing again is a new broker (or a new connection to
                    # it): what went out meanwhile may be lost, so the path's epoch moves on
                    # at once and gateways ask for a replay at the next publication.
                    log.warning("broker %d subscribed again: gateways will ask for replays", k)
                    path.journal.path_broken()
        return seen

    def publish(self, topic: bytes, publication: Publication) -> None:
        paths = self.paths
        path = paths[0] if len(paths) == 1 else paths[broker_of(topic, len(paths))]
        journal = path.journal
        if journal is None:
            body = publication.encode()
        else:
            stamp = journal.stamp()
            body = publication.encode_stamped(stamp.origin, stamp.seq, stamp.epoch)
            journal.record(stamp.seq, time.monotonic(), topic, body)
        try:
            path.socket.send_multipart((topic, body), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            PUBLISH_DROPS.inc()
            log.warning("publish dropped at high-water mark (total %d)", self.dropped)

    def beat(self) -> None:
        """Publish a beat on every path to every gateway (numbered publishers; the runner
        calls this on a timer)."""
        if not self.journals:
            return
        self.drain_subscriptions()
        now = time.monotonic()
        for path in self.paths:
            if path.journal is None:
                continue
            stamp = path.journal.beat(now)
            body = Publication(PubKind.BEAT, "", source=self.source).encode_stamped(
                stamp.origin, stamp.seq, stamp.epoch)
            try:
                path.socket.send_multipart((topics.ALL_GATEWAYS, body), flags=zmq.NOBLOCK)
            except zmq.Again:
                self.dropped += 1
                PUBLISH_DROPS.inc()

    def close(self, linger_ms: int = 0) -> None:
        """Release the sockets; with ``linger_ms``, after sending what is queued (bounded)."""
        for path in self.paths:
            path.socket.close(linger=linger_ms)
