"""Publishing fan-out envelopes: what a service tells gateways to do with sockets.

Services receive a :class:`Publisher` through their constructor. :class:`ZmqPublisher`
sends on a PUB socket connected to the broker; :class:`MemoryPublisher` keeps what was
published in a list, for handler tests that call handlers directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import zmq
from prometheus_client import Counter

from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, Publication
from switchboard.shared.journal import Journal

log = logging.getLogger(__name__)

PUBLISH_DROPS = Counter(
    "switchboard_publish_drops_total", "Publications dropped at the ZeroMQ high-water mark"
)


class Publisher:
    """Target helpers over one abstract :meth:`publish`; subclasses decide where it goes."""

    source: str = ""
    #: Numbers and remembers what is published, for replays (services' publishers only).
    journal: Journal | None = None

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


class ZmqPublisher(Publisher):
    """An XPUB socket connected to the broker's XSUB endpoint.

    XPUB rather than PUB so that the broker's subscription (it subscribes to everything)
    arrives here as a message: :meth:`wait_ready` is a real readiness handshake instead of a
    sleep, and a broker restart shows up as a fresh subscription.

    Publishing never blocks: at the high-water mark ZeroMQ drops, which is counted and logged
    rather than stalling a request handler. With a :class:`~shared.journal.Journal`, every
    publication is numbered and remembered, and :meth:`beat` publishes the beats by which
    gateways notice what a broker crash made them miss (docs/delivery.md).
    """

    def __init__(self, context: zmq.Context[Any], endpoint: str, source: str,
                 hwm: int = 100_000, journal: Journal | None = None):
        self.source = source
        self.journal = journal
        # A plain (blocking-API) socket even when given an asyncio context: sends are
        # non-blocking anyway, and handlers publish without awaiting.
        sync_context: zmq.Context[Any] = zmq.Context.shadow(context.underlying)
        self.socket: zmq.Socket[Any] = sync_context.socket(zmq.XPUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.connect(endpoint)
        self.dropped = 0
        self.broker_subscriptions = 0

    async def wait_ready(self, timeout: float) -> bool:
        """Wait (bounded) until the broker has subscribed to us; True when it has."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.drain_subscriptions():
                return True
            await asyncio.sleep(0.005)
        return False

    def drain_subscriptions(self) -> bool:
        """Read pending (un)subscribe messages from the broker; True if any subscribe came."""
        seen = False
        while self.socket.poll(0, zmq.POLLIN):
            msg = self.socket.recv(zmq.NOBLOCK)
            if msg[:1] == b"\x01":
                self.broker_subscriptions += 1
                seen = True
                if self.broker_subscriptions > 1 and self.journal is not None:
                    # A broker subscribing again is a new broker (or a new connection to
                    # it): what went out meanwhile may be lost, so the epoch moves on at
                    # once and gateways ask for a replay at the next publication.
                    log.warning("broker subscribed again: gateways will ask for replays")
                    self.journal.path_broken()
        return seen

    def publish(self, topic: bytes, publication: Publication) -> None:
        journal = self.journal
        if journal is None:
            body = publication.encode()
        else:
            stamp = journal.stamp()
            body = publication.encode_stamped(stamp.origin, stamp.seq, stamp.epoch)
            journal.record(stamp.seq, time.monotonic(), topic, body)
        try:
            self.socket.send_multipart((topic, body), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            PUBLISH_DROPS.inc()
            log.warning("publish dropped at high-water mark (total %d)", self.dropped)

    def beat(self) -> None:
        """Publish a beat to every gateway (with a journal; the runner calls this on a timer)."""
        journal = self.journal
        if journal is None:
            return
        self.drain_subscriptions()
        stamp = journal.beat(time.monotonic())
        body = Publication(PubKind.BEAT, "", source=self.source).encode_stamped(
            stamp.origin, stamp.seq, stamp.epoch)
        try:
            self.socket.send_multipart((topics.ALL_GATEWAYS, body), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            PUBLISH_DROPS.inc()

    def close(self) -> None:
        self.socket.close(linger=0)
