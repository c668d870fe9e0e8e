"""The gateway's SUB socket: topics reference-counted, each subscription confirmed by the
broker before anyone relies on it, and the connection's losses noticed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import zmq
import zmq.asyncio

from switchboard.shared.loopsocket import LoopSocket, SocketMonitor, plain_socket

log = logging.getLogger("switchboard.gateway.fanout")

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


async def wait_all(futures: Iterable[asyncio.Future[None] | None], timeout: float) -> None:
    """Wait (bounded) for subscription confirmations; a lost one only logs."""
    pending = [f for f in futures if f is not None]
    if not pending:
        return
    _, not_done = await asyncio.wait(pending, timeout=timeout)
    if not_done:
        log.warning("%d subscription(s) not confirmed by the broker in %.1fs",
                    len(not_done), timeout)
