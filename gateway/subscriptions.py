"""The gateway's SUB sockets, one per broker: topics reference-counted, each subscribed on
the broker it lives on (:func:`~switchboard.shared.topics.broker_of`; control topics on
every broker), each subscription confirmed by that broker before anyone relies on it, and
each connection's losses noticed."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable, Sequence

import zmq
import zmq.asyncio

from switchboard.shared import topics
from switchboard.shared.loopsocket import LoopSocket, SocketMonitor, plain_socket

log = logging.getLogger("switchboard.gateway.fanout")

_WATCHED = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED


class _Link:
    """The SUB socket to one broker, and what that broker has confirmed."""

    def __init__(self, subs: Subscriptions, k: int, context: zmq.asyncio.Context,
                 endpoint: str, hwm: int,
                 on_message: Callable[[list[bytes], int], None]) -> None:
        self.k = k
        self.endpoint = endpoint
        self.subs = subs
        sub = plain_socket(context, zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, hwm)
        sub.setsockopt(zmq.RECONNECT_IVL, 100)
        sub.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        # ZeroMQ-level heartbeats: a half-open TCP connection to a vanished broker is
        # dropped and re-dialled, and subscriptions are re-sent on the new connection.
        sub.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sub.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        self.lost_at: float | None = None
        self.connected = False
        self.monitor = SocketMonitor(sub, _WATCHED, self._on_event)
        sub.connect(endpoint)
        self.socket = LoopSocket(sub, functools.partial(_tagged, on_message, k))
        #: When this broker last confirmed each topic (loop time).
        self.confirmed_at: dict[bytes, float] = {}

    def _on_event(self, event: int) -> None:
        now = asyncio.get_running_loop().time()
        if event == zmq.EVENT_DISCONNECTED:
            if self.connected:
                log.warning("connection to broker %d (%s) lost", self.k, self.endpoint)
                self.lost_at = now
            self.connected = False
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.connected = True
            lost_at, self.lost_at = self.lost_at, None
            if lost_at is not None and self.subs.on_reconnect is not None:
                self.subs.on_reconnect(lost_at, self.k)


def _tagged(on_message: Callable[[list[bytes], int], None], k: int,
            frames: list[bytes]) -> None:
    on_message(frames, k)


class Subscriptions:
    """SUB sockets (one per broker, in the order given) with reference-counted topics and
    broker-confirmed subscribing.

    Every message received goes to ``on_message(frames, broker)`` (see :class:`LoopSocket`),
    from :meth:`start` on; a new connection to broker ``k`` (after a crash, a freeze, a
    network cut: what was queued for the old one is gone) to ``on_reconnect(lost_at, k)``.
    """

    def __init__(
        self,
        context: zmq.asyncio.Context,
        endpoints: str | Sequence[str],
        on_message: Callable[[list[bytes], int], None],
        hwm: int = 100_000,
        on_reconnect: Callable[[float, int], None] | None = None,
    ) -> None:
        listed = (endpoints,) if isinstance(endpoints, str) else tuple(endpoints)
        if not listed:
            raise ValueError("subscriptions need at least one broker endpoint")
        self.on_reconnect = on_reconnect
        self.links = [_Link(self, k, context, endpoint, hwm, on_message)
                      for k, endpoint in enumerate(listed)]
        self.counts: dict[bytes, int] = {}
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        #: Who waits for topics to be confirmed again by one broker (see :meth:`settled`).
        self._settling: list[tuple[int, set[bytes], asyncio.Future[None]]] = []

    @property
    def brokers(self) -> int:
        return len(self.links)

    def home(self, topic: bytes) -> int:
        """The broker that publications to ``topic`` pass through."""
        return topics.broker_of(topic, len(self.links))

    def _where(self, topic: bytes) -> Iterable[_Link]:
        links = self.links
        if len(links) == 1:
            return links
        if topics.everywhere(topic):
            return links
        return (links[topics.broker_of(topic, len(links))],)

    def add(self, topic: bytes) -> asyncio.Future[None] | None:
        """Reference the topic; returns a future resolved when its broker has it in force.

        None when it already is. A second reference while the first subscription is still
        unconfirmed waits for that same confirmation (its ack must not overtake it).
        """
        count = self.counts.get(topic, 0)
        self.counts[topic] = count + 1
        if count and topic not in self._waiters:
            return None
        if not count:
            for link in self._where(topic):
                link.socket.setsockopt(zmq.SUBSCRIBE, topic)
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
            for link in self._where(topic):
                link.confirmed_at.pop(topic, None)
                link.socket.setsockopt(zmq.UNSUBSCRIBE, topic)

    def confirmed(self, topic: bytes, broker: int = 0) -> None:
        """Broker ``broker`` has the subscription to ``topic`` in force. Waiters are told
        when the topic's own broker confirms (a control topic's publications pass there)."""
        self.links[broker].confirmed_at[topic] = asyncio.get_running_loop().time()
        if broker == self.home(topic):
            for future in self._waiters.pop(topic, ()):
                if not future.done():
                    future.set_result(None)
        if self._settling:
            for k, missing, future in self._settling:
                if k == broker:
                    missing.discard(topic)
                    if not missing and not future.done():
                        future.set_result(None)
            self._settling = [(k, m, f) for k, m, f in self._settling if not f.done()]

    async def settled(self, since: float, timeout: float, broker: int = 0) -> bool:
        """Wait (bounded) until every topic that lives on ``broker`` has been confirmed by
        it at or after ``since``: a new broker has every subscription in force. True when
        it has."""
        link = self.links[broker]
        missing = {t for t in self.counts if link in self._where(t)
                   and link.confirmed_at.get(t, -1.0) < since}
        if not missing:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settling.append((broker, missing, future))
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            log.warning("%d topics not confirmed by broker %d in %.1fs", len(missing), broker,
                        timeout)
            return False

    def start(self) -> None:
        for link in self.links:
            link.socket.start()
            link.monitor.start()

    def close(self) -> None:
        for link in self.links:
            link.monitor.close()
            link.socket.close()


async def wait_all(futures: Iterable[asyncio.Future[None] | None], timeout: float) -> None:
    """Wait (bounded) for subscription confirmations; a lost one only logs."""
    pending = [f for f in futures if f is not None]
    if not pending:
        return
    _, not_done = await asyncio.wait(pending, timeout=timeout)
    if not_done:
        log.warning("%d subscription(s) not confirmed by the broker in %.1fs",
                    len(not_done), timeout)
