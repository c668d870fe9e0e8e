"""Fan-out (:class:`Fanout`): every publication that arrives from the brokers, delivered to
this gateway's sockets: EMITs encoded once and written to each member, membership changes,
disconnects, and each broker's heartbeat (its liveness). The SUB sockets are
:mod:`.subscriptions`; who is where, :mod:`.index`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

import msgpack

from switchboard.gateway import metrics as m
from switchboard.gateway import wsframe
from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.continuity import AskReplay, Continuity
from switchboard.gateway.index import ANY_NAMESPACE, LocalIndex
from switchboard.gateway.protocol import encode_event_frames
from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, Publication, ReplayBatch
from switchboard.shared.errors import EnvelopeError
from switchboard.shared.journal import offset as offset_of

log = logging.getLogger("switchboard.gateway.fanout")


class Confirmations(Protocol):
    """Where the broker's subscription confirmations go
    (:class:`~.subscriptions.Subscriptions`)."""

    def confirmed(self, topic: bytes, broker: int = 0) -> None: ...

    async def settled(self, since: float, timeout: float, broker: int = 0) -> bool: ...


class Actions(Protocol):
    """What publications may ask of the rest of the gateway."""

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


@dataclass(slots=True)
class BrokerState:
    """What the gateway knows of one broker's liveness."""

    instance: str | None = None
    missed: int = 0
    #: Loop time of the old instance's last heartbeat when a new one appeared.
    changed_since: float | None = None
    last_heartbeat: float = 0.0
    #: Publications received from it (beats included).
    publications: int = 0
    heartbeat_waiters: list[asyncio.Future[None]] = field(default_factory=list)


class Fanout:
    """Handles every message of the SUB sockets (see the module docstring)."""

    def __init__(self, subs: Confirmations, index: LocalIndex, actions: Actions,
                 meters: m.EventMeters, liveness: int = 3,
                 recoverable: frozenset[str] = frozenset(), brokers: int = 1) -> None:
        self.subs = subs
        #: Namespaces with connection state recovery: their events carry offsets.
        self.recoverable = recoverable
        self.index = index
        self.actions = actions
        self.meters = meters
        self.liveness = liveness
        self.counters = {"publications": 0, "deliveries": 0}
        #: Each broker's liveness, in the order the gateway lists them.
        self.brokers = [BrokerState() for _ in range(brokers)]
        #: Set once every broker has been heard from.
        self.broker_seen = asyncio.Event()
        #: Dedupes and finds gaps in the services' numbered publications.
        self.continuity = Continuity()
        self._misrouted: set[str] = set()
        self._publication_counters = {
            kind: m.PUBLICATIONS.labels(kind.name.lower()) for kind in PubKind
        }

    @property
    def broker_up(self) -> bool:
        """Every broker is heard from (a silent one holds some topics' publications)."""
        return all(b.missed < self.liveness for b in self.brokers)

    def brokers_down(self) -> list[int]:
        return [k for k, b in enumerate(self.brokers) if b.missed >= self.liveness]

    def on_message(self, frames: list[bytes], broker: int = 0) -> None:
        """A message from broker ``broker`` (its position in the gateway's list)."""
        if len(frames) != 2:
            return
        topic, body = frames
        if body == topics.SUBSCRIBED_MARKER:
            self.subs.confirmed(topic, broker)
            return
        if topic == topics.BROKER_HEARTBEAT:
            self._broker_heartbeat(body, broker)
            return
        self.brokers[broker].publications += 1
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
        if publication.kind == PubKind.BEAT:
            self._check_path(publication, broker)
        out, ask = self.continuity.receive(publication, broker)
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

    def reconnected(self, lost_at: float, broker: int = 0) -> None:
        """Our connection to a broker was new (see
        :class:`~.subscriptions.Subscriptions`): what the old one had queued for us is gone,
        as in a broker restart."""
        self.continuity.broker_changed(broker)
        self.brokers[broker].changed_since = lost_at

    async def settled(self, timeout: float, broker: int = 0) -> bool:
        """Before a replay of a path through ``broker`` is asked for: wait for that broker's
        next heartbeat (so a new broker is known) and, if it changed, for every topic that
        lives on it to be in force there (a publication that passed the new broker before
        our subscription did is then in the replay). Bounded; True when settled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        beat: asyncio.Future[None] = loop.create_future()
        state = self.brokers[broker]
        state.heartbeat_waiters.append(beat)
        try:
            await asyncio.wait_for(beat, timeout)
        except TimeoutError:
            return False
        since = state.changed_since
        if since is None:
            return True
        return await self.subs.settled(since, max(deadline - loop.time(), 0.0), broker)

    async def before_replay(self, ask: AskReplay, timeout: float) -> bool:
        """Wait until ``ask`` may be sent (:meth:`settled` for its broker); from then on a
        change of that broker makes its origin suspect again. True when settled."""
        settled = await self.settled(timeout, ask.broker)
        self.continuity.asking(ask.origin)
        return settled

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
        if index.restoring and pub.kind == PubKind.EMIT:
            index.hold(pub)
        if not targets:
            return
        actions = self.actions
        if pub.kind == PubKind.EMIT and pub.ns in self.recoverable and pub.origin \
                and not pub.ack_event:
            self._deliver_recoverable(pub, targets)
        elif pub.kind == PubKind.EMIT and pub.ack_event:
            for sock in targets:  # each needs its own ack id: no shared encoding here
                sock.send_event(pub.event, pub.args, pub.ack_event)
                sock.client.flush()
        elif pub.kind == PubKind.EMIT and pub.ns == ANY_NAMESPACE:
            for sock in targets:
                sock.send_event(pub.event, pub.args)
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
                sock.delivered(key)
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

    # -- the brokers' liveness ---------------------------------------------------------------
    def _broker_heartbeat(self, body: bytes, broker: int) -> None:
        try:
            instance, _seq = msgpack.unpackb(body)
        except Exception:
            return
        state = self.brokers[broker]
        state.missed = 0
        now = asyncio.get_running_loop().time()
        if state.instance is not None and instance != state.instance:
            log.warning("broker %d restarted (instance %s)", broker, instance)
            state.changed_since = state.last_heartbeat
            self.continuity.broker_changed(broker)
        state.instance = instance
        state.last_heartbeat = now
        if not self.broker_seen.is_set() and all(b.instance for b in self.brokers):
            self.broker_seen.set()
        waiters, state.heartbeat_waiters = state.heartbeat_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _check_path(self, beat: Publication, broker: int) -> None:
        """A beat of a publisher's path through broker ``k`` (origin ``…/k``) must arrive
        from our broker ``k``: otherwise the two list the brokers differently, and topics
        are published where this gateway does not subscribe them."""
        origin = beat.origin
        _, sep, path = origin.rpartition("/")
        if len(self.brokers) == 1:
            if not sep:
                return
        elif path == str(broker):
            return
        if origin not in self._misrouted and len(self._misrouted) < 256:
            self._misrouted.add(origin)
            log.error("%s (origin %s) lists other brokers than this gateway: its beats for "
                      "broker %s arrive from broker %d (every part must list the same "
                      "brokers in the same order: --broker-pub, --broker-sub)",
                      beat.source, origin, path if sep else 0, broker)

    async def watch_broker(self, interval: float) -> None:
        """Count missed broker heartbeats (health); ZeroMQ heartbeats handle reconnects."""
        while True:
            await asyncio.sleep(interval)
            for k, state in enumerate(self.brokers):
                state.missed += 1
                if state.missed == self.liveness:
                    log.warning("broker %d silent for %d heartbeats", k, state.missed)
