"""Fan-out: the broker's publications delivered to this gateway's sockets.

- :class:`Subscriptions` — the SUB socket, with reference-counted, broker-confirmed topics.
- :class:`LocalIndex` — which local sockets are in which namespaces and rooms; a room topic
  is subscribed while at least one local socket is in the room, and only then.
- :class:`Fanout` — every publication that arrives: EMITs encoded once and written to each
  member, membership changes, disconnects, and the broker's heartbeat (its liveness).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgpack
import zmq
import zmq.asyncio

from switchboard.gateway import metrics as m
from switchboard.gateway import wsframe
from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.continuity import AskReplay, Continuity
from switchboard.gateway.protocol import encode_event_frames
from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, Publication, ReplayBatch
from switchboard.shared.errors import EnvelopeError
from switchboard.shared.journal import offset as offset_of
from switchboard.shared.loopsocket import LoopSocket, SocketMonitor, plain_socket

log = logging.getLogger("switchboard.gateway.fanout")

#: Namespace of a publication that targets socket ids in whatever namespace they are.
ANY_NAMESPACE = "*"
_WATCHED = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED


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
        on_reconnect: Callable[[float], None] | None = None,
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
        # A new connection to the broker (after a crash, a freeze, a network cut): what was
        # queued for the old one is gone, so the caller hears when it was lost.
        self.on_reconnect = on_reconnect
        self._lost_at: float | None = None
        self._connected = False
        self.monitor = SocketMonitor(sub, _WATCHED, self._on_event)
        sub.connect(endpoint)
        self.socket = LoopSocket(sub, on_message)
        self.endpoint = endpoint
        self.counts: dict[bytes, int] = {}
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        #: When the broker last confirmed each topic (monotonic), and who waits for topics
        #: to be confirmed again (after a broker restart, see :meth:`settled`).
        self.confirmed_at: dict[bytes, float] = {}
        self._settling: list[tuple[set[bytes], asyncio.Future[None]]] = []

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
        self.confirmed_at.pop(topic, None)
        if count == 0:
            self.socket.setsockopt(zmq.UNSUBSCRIBE, topic)

    def confirmed(self, topic: bytes) -> None:
        self.confirmed_at[topic] = asyncio.get_running_loop().time()
        for future in self._waiters.pop(topic, ()):
            if not future.done():
                future.set_result(None)
        if self._settling:
            for missing, future in self._settling:
                missing.discard(topic)
                if not missing and not future.done():
                    future.set_result(None)
            self._settling = [(m, f) for m, f in self._settling if not f.done()]

    async def settled(self, since: float, timeout: float) -> bool:
        """Wait (bounded) until every topic has been confirmed at or after ``since``: a new
        broker has every subscription in force. True when it has."""
        missing = {t for t in self.counts if self.confirmed_at.get(t, -1.0) < since}
        if not missing:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settling.append((missing, future))
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            log.warning("%d topics not confirmed by the broker in %.1fs", len(missing), timeout)
            return False

    def _on_event(self, event: int) -> None:
        now = asyncio.get_running_loop().time()
        if event == zmq.EVENT_DISCONNECTED:
            if self._connected:
                log.warning("connection to the broker lost")
                self._lost_at = now
            self._connected = False
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._connected = True
            lost_at, self._lost_at = self._lost_at, None
            if lost_at is not None and self.on_reconnect is not None:
                self.on_reconnect(lost_at)

    def start(self) -> None:
        self.socket.start()
        self.monitor.start()

    def close(self) -> None:
        self.monitor.close()
        self.socket.close()


class Subscriber(Protocol):
    """What the index needs of the SUB socket (:class:`Subscriptions`)."""

    def add(self, topic: bytes) -> asyncio.Future[None] | None: ...

    def remove(self, topic: bytes) -> None: ...


class RoomObserver(Protocol):
    """Told of a live socket's joins and leaves (the Admin UI)."""

    def room_joined(self, sock: NsSocket, room: str) -> None: ...

    def room_left(self, sock: NsSocket, room: str) -> None: ...


class RoomObservers:
    """Several observers as one."""

    def __init__(self, observers: Iterable[RoomObserver]) -> None:
        self.observers = tuple(observers)

    def room_joined(self, sock: NsSocket, room: str) -> None:
        for observer in self.observers:
            observer.room_joined(sock, room)

    def room_left(self, sock: NsSocket, room: str) -> None:
        for observer in self.observers:
            observer.room_left(sock, room)


class LocalIndex:
    """Namespaces and rooms → local sockets; drives the subscriptions."""

    def __init__(self, subscriptions: Subscriber, gateway_id: str = "") -> None:
        self.subs = subscriptions
        self.gateway_id = gateway_id
        self.observer: RoomObserver | None = None
        self.by_sid: dict[str, NsSocket] = {}
        #: Sockets being restored by a recovery: their publications are kept, not written.
        self.holding: dict[str, NsSocket] = {}
        self.namespaces: dict[str, set[NsSocket]] = {}
        self.rooms: dict[tuple[str, str], set[NsSocket]] = {}

    def add(self, sock: NsSocket) -> list[asyncio.Future[None] | None]:
        self.by_sid[sock.sid] = sock
        members = self.namespaces.setdefault(sock.ns, set())
        members.add(sock)
        if sock.held is not None:
            self.holding[sock.sid] = sock
        confirmations = [self.subs.add(topics.namespace(sock.ns))]
        if self._foreign(sock.sid):
            # Recovered here with another gateway's socket id: what is sent to it goes to
            # that gateway's topic, so follow it by its own.
            confirmations.append(self.subs.add(topics.socket(sock.sid)))
        return confirmations

    def _foreign(self, sid: str) -> bool:
        try:
            return bool(self.gateway_id) and topics.gateway_of(sid) != self.gateway_id
        except ValueError:
            return False

    def remove(self, sock: NsSocket) -> None:
        # By identity, not by sid: a socket restored here under the same id (a recovery
        # racing the old connection's drop) must not lose its entry to the old one's removal.
        if self.by_sid.get(sock.sid) is sock:
            del self.by_sid[sock.sid]
        elif sock not in self.namespaces.get(sock.ns, ()):
            return  # removed already
        if self.holding.get(sock.sid) is sock:
            del self.holding[sock.sid]
        if self._foreign(sock.sid):
            self.subs.remove(topics.socket(sock.sid))
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
        if self.observer is not None and sock.live:
            self.observer.room_joined(sock, room)
        return self.subs.add(topic)

    def leave(self, sock: NsSocket, room: str) -> None:
        if room not in sock.rooms:
            return
        sock.rooms.discard(room)
        if self.observer is not None and sock.live:
            self.observer.room_left(sock, room)
        key = (sock.ns, room)
        members = self.rooms.get(key)
        if members is not None:
            members.discard(sock)
            if not members:
                del self.rooms[key]
        self.subs.remove(topics.room(sock.ns, room))

    def hold(self, pub: Publication) -> None:
        """Keep an EMIT for every socket being restored that it reaches."""
        excluded = set(pub.exclude)
        for sock in self._reached(pub.ns, pub.room, pub.sids):
            if sock.held is not None and sock.sid not in excluded:
                sock.held.append(pub)

    def targets(
        self, ns: str, room: str | None, sids: Iterable[str], exclude: Iterable[str]
    ) -> list[NsSocket]:
        """The live sockets a publication reaches."""
        found = self._reached(ns, room, sids)
        if exclude:
            excluded = set(exclude)
            return [s for s in found if s.live and s.sid not in excluded]
        return [s for s in found if s.live]

    def _reached(self, ns: str, room: str | None, sids: Iterable[str]) -> list[NsSocket]:
        if sids:
            found = [self.by_sid[s] for s in sids if s in self.by_sid]
            if ns != ANY_NAMESPACE:  # a socket id names one namespace socket already
                found = [s for s in found if s.ns == ns]
        elif room is not None:
            found = list(self.rooms.get((ns, room), ()))
        else:
            found = list(self.namespaces.get(ns, ()))
        return found


async def wait_all(futures: Iterable[asyncio.Future[None] | None], timeout: float) -> None:
    """Wait (bounded) for subscription confirmations; a lost one only logs."""
    pending = [f for f in futures if f is not None]
    if not pending:
        return
    _, not_done = await asyncio.wait(pending, timeout=timeout)
    if not_done:
        log.warning("%d subscription(s) not confirmed by the broker in %.1fs",
                    len(not_done), timeout)




class Confirmations(Protocol):
    """Where the broker's subscription confirmations go (:class:`Subscriptions`)."""

    def confirmed(self, topic: bytes) -> None: ...

    async def settled(self, since: float, timeout: float) -> bool: ...


class Actions(Protocol):
    """What publications may ask of the rest of the gateway."""

    def send_event(self, sock: NsSocket, event: str, args: list[Any], ack_event: str) -> None:
        """An event to one socket, asking for an ack when ``ack_event`` is set."""

    def drop_socket(self, sock: NsSocket) -> None:
        """The socket left its namespace."""

    def close_client(self, client: Client, reason: str) -> None:
        """End the whole connection."""

    def resync(self, service: str) -> None:
        """A stateful service (re)started: send it our sockets."""

    def report(self, pub: Publication) -> None:
        """An Admin UI socket elsewhere asks for this gateway's sockets."""

    def peer(self, announcement: Publication) -> None:
        """Another gateway announced itself."""

    def release(self, pub: Publication) -> None:
        """A socket was recovered on gateway ``pub.args[0]``: forget it if it is here."""

    def policy_changed(self, pub: Publication) -> None:
        """A change of the moderation policy (gateway.policing)."""

    def replay(self, ask: AskReplay) -> None:
        """Fetch what a publisher sent that this gateway missed, then call
        :meth:`Fanout.replayed` (see :mod:`switchboard.gateway.continuity`)."""


class Fanout:
    """Handles every message of the SUB socket (see the module docstring)."""

    def __init__(self, subs: Confirmations, index: LocalIndex, actions: Actions,
                 meters: m.EventMeters, liveness: int = 3,
                 recoverable: frozenset[str] = frozenset()) -> None:
        self.subs = subs
        #: Namespaces with connection state recovery: their events carry offsets.
        self.recoverable = recoverable
        self.index = index
        self.actions = actions
        self.meters = meters
        self.liveness = liveness
        self.counters = {"publications": 0, "deliveries": 0}
        self.broker_instance: str | None = None
        self.broker_missed = 0
        self.broker_seen = asyncio.Event()
        #: Dedupes and finds gaps in the services' numbered publications.
        self.continuity = Continuity()
        #: Loop time of the old broker's last heartbeat when a new broker appeared.
        self.broker_changed_since: float | None = None
        self._last_heartbeat = 0.0
        self._heartbeat_waiters: list[asyncio.Future[None]] = []
        self._publication_counters = {
            kind: m.PUBLICATIONS.labels(kind.name.lower()) for kind in PubKind
        }

    @property
    def broker_up(self) -> bool:
        return self.broker_missed < self.liveness

    def on_message(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            return
        topic, body = frames
        if body == topics.SUBSCRIBED_MARKER:
            self.subs.confirmed(topic)
            return
        if topic == topics.BROKER_HEARTBEAT:
            self._broker_heartbeat(body)
            return
        try:
            publication = Publication.decode(body)
        except EnvelopeError as exc:
            log.warning("undecodable publication on %r dropped: %s", topic, exc)
            return
        if publication.kind == PubKind.PEER:  # gateway announcements: not traffic
            self.actions.peer(publication)
            return
        if not publication.origin:  # not numbered
            self._handle(publication)
            return
        out, ask = self.continuity.receive(publication)
        if ask is not None:
            log.warning("publications of %s (%s) after #%d missed: asking for them",
                        ask.source, ask.origin, ask.after)
            m.REPLAYS.labels("asked").inc()
            self.actions.replay(ask)
        for pub in out:
            self._handle(pub)

    def replayed(self, origin: str, batch: ReplayBatch | None) -> None:
        """A replay's answer (None: it failed): deliver what was missed and held, in order."""
        out, ask = self.continuity.replayed(origin, batch)
        m.REPLAYS.labels("answered" if batch is not None else "failed").inc()
        m.REPLAYED.inc(len(out))
        if ask is not None:
            self.actions.replay(ask)
        for pub in out:
            self._handle(pub)

    def reconnected(self, lost_at: float) -> None:
        """Our connection to the broker was new (see :class:`Subscriptions`): what the old
        one had queued for us is gone, as in a broker restart."""
        self.continuity.broker_changed()
        self.broker_changed_since = lost_at

    async def settled(self, timeout: float) -> bool:
        """Before a replay is asked for: wait for the broker's next heartbeat (so a new
        broker is known) and, if the broker changed, for every topic to be in force there
        (a publication that passed the new broker before our subscription did is then in
        the replay). Bounded; True when settled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        beat: asyncio.Future[None] = loop.create_future()
        self._heartbeat_waiters.append(beat)
        try:
            await asyncio.wait_for(beat, timeout)
        except TimeoutError:
            return False
        since = self.broker_changed_since
        if since is None:
            return True
        return await self.subs.settled(since, max(deadline - loop.time(), 0.0))

    def _handle(self, publication: Publication) -> None:
        self.counters["publications"] += 1
        self._publication_counters[publication.kind].inc()
        try:
            self.deliver(publication)
        except Exception:
            log.exception("publication %s failed", publication.kind.name)

    def deliver(self, pub: Publication) -> None:
        if pub.kind == PubKind.BEAT:
            return
        if pub.kind == PubKind.RESYNC:
            self.actions.resync(pub.source)
            return
        if pub.kind == PubKind.REPORT:
            self.actions.report(pub)
            return
        if pub.kind == PubKind.RELEASE:
            self.actions.release(pub)
            return
        if pub.kind == PubKind.POLICY:
            self.actions.policy_changed(pub)
            return
        index = self.index
        targets = index.targets(pub.ns, pub.room, pub.sids, pub.exclude)
        if index.holding and pub.kind == PubKind.EMIT:
            index.hold(pub)
        if not targets:
            return
        actions = self.actions
        if pub.kind == PubKind.EMIT and pub.ns in self.recoverable and pub.origin \
                and not pub.ack_event:
            self._deliver_recoverable(pub, targets)
        elif pub.kind == PubKind.EMIT and pub.ack_event:
            for sock in targets:  # each needs its own ack id: no shared encoding here
                actions.send_event(sock, pub.event, pub.args, pub.ack_event)
                sock.client.flush()
        elif pub.kind == PubKind.EMIT and pub.ns == ANY_NAMESPACE:
            for sock in targets:
                sock.client.conn.send_event(sock.ns, pub.event, sock.tail(pub.args))
                sock.client.flush()
        elif pub.kind == PubKind.EMIT:
            self._write_shared(pub, encode_event_frames(pub.ns, pub.event, pub.args), targets)
        elif pub.kind == PubKind.JOIN and pub.room is not None:
            for sock in targets:
                self.index.join(sock, pub.room)
        elif pub.kind == PubKind.LEAVE and pub.room is not None:
            for sock in targets:
                self.index.leave(sock, pub.room)
        elif pub.kind == PubKind.DISCONNECT:
            for sock in targets:
                conn = sock.client.conn
                if conn.closed:
                    continue
                if pub.event:
                    conn.send_event(sock.ns, pub.event, sock.tail(pub.args))
                conn.disconnect(sock.ns)
                sock.client.flush()
                actions.drop_socket(sock)
        elif pub.kind == PubKind.CLOSE:
            for sock in targets:
                actions.close_client(sock.client, "closed by server")

    def _deliver_recoverable(self, pub: Publication, targets: list[NsSocket]) -> None:
        """An event of a namespace with recovery: its offset goes last (encoded once), and
        a recovered socket skips what its replay already gave it."""
        key = offset_of(pub.origin, pub.seq)
        reached = []
        for sock in targets:
            floor = sock.floor
            if floor is None or pub.seq > floor.get(pub.origin, 0):
                sock.offset = key
                reached.append(sock)
        self._write_shared(pub, encode_event_frames(pub.ns, pub.event, [*pub.args, key]),
                           reached)

    def _write_shared(self, pub: Publication, frames: list[str | bytes],
                      targets: list[NsSocket]) -> None:
        """Frames encoded once per message, the same bytes written to every member
        (polling members queue the same packets)."""
        data: bytes | None = None
        for sock in targets:
            client = sock.client
            if client.polling is None and client.conn.eio == 4:
                if data is None:
                    data = wsframe.encode_all(frames)
                client.write(data)
            else:
                client.send_frames(frames)  # polling, or a v3 client's binary framing
        self.counters["deliveries"] += len(targets)
        m.DELIVERIES.inc(len(targets))
        self.meters.sent(pub.ns, pub.event).inc()

    # -- the broker's liveness ---------------------------------------------------------------
    def _broker_heartbeat(self, body: bytes) -> None:
        try:
            instance, _seq = msgpack.unpackb(body)
        except Exception:
            return
        self.broker_missed = 0
        self.broker_seen.set()
        now = asyncio.get_running_loop().time()
        if self.broker_instance is not None and instance != self.broker_instance:
            log.warning("broker restarted (instance %s)", instance)
            self.broker_changed_since = self._last_heartbeat
            self.continuity.broker_changed()
        self.broker_instance = instance
        self._last_heartbeat = now
        waiters, self._heartbeat_waiters = self._heartbeat_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def watch_broker(self, interval: float) -> None:
        """Count missed broker heartbeats (health); ZeroMQ heartbeats handle reconnects."""
        while True:
            await asyncio.sleep(interval)
            self.broker_missed += 1
            if self.broker_missed == self.liveness:
                log.warning("broker silent for %d heartbeats", self.broker_missed)
