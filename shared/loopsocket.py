"""A plain ZeroMQ socket driven by the asyncio loop: a reader callback, non-blocking sends.

``zmq.asyncio`` gives every ``recv`` and ``send`` a future, a poller registration and
several ``EVENTS`` checks; on the hot path (a request and its reply per hop, a publication
per message) that machinery cost about twice the socket work itself (measured: 78 vs 40 µs
of CPU per request/reply round trip on one side, ``bench`` fan-out profile). Here the
socket's ``FD`` is registered with the loop once, every ready message is handed to a
callback in the same loop iteration (a burst at most, then the rest in the next one), and
sends are plain non-blocking calls.

Batching (:meth:`LoopSocket.send_soon`): messages queued for one peer during a loop
iteration leave together, as one multipart message whose frames after the peer's identity
are the messages, so a burst costs one ZeroMQ send (and at most one wake-up of its I/O
thread) instead of one per message. Nothing waits to fill a batch: the queue is sent at the
end of the iteration it was started in, so at light load a batch is one message and latency
is unchanged. Receivers read every frame of such a message as a message of its own.

ZeroMQ's ``FD`` is edge-triggered: any call on the socket (a send, a subscription) may
consume the wake-up for a message that has just arrived. So after such calls the socket's
``EVENTS`` are read again and, if input is waiting, it is read in the next iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

log = logging.getLogger("switchboard.zmq")

#: Messages handled per wake-up before other work gets a turn.
BURST = 256


def plain_socket(context: zmq.Context[Any], kind: int) -> zmq.Socket[Any]:
    """A blocking-API socket on ``context``'s ZeroMQ context (also an asyncio one)."""
    return zmq.Context.shadow(context.underlying).socket(kind)


def service_dealer(context: zmq.Context[Any], addresses: list[str], hwm: int,
                   routing_id: bytes = b"") -> zmq.Socket[Any]:
    """A DEALER to a service's ROUTER, as gateways and forwarding services use: no linger,
    ``IMMEDIATE`` (nothing queued for a service that is down: the sender hears at once),
    bounded queues, quick reconnects, ZeroMQ heartbeats to notice a dead peer."""
    dealer = plain_socket(context, zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    if routing_id:
        dealer.setsockopt(zmq.ROUTING_ID, routing_id)
    dealer.setsockopt(zmq.IMMEDIATE, 1)
    dealer.setsockopt(zmq.SNDHWM, hwm)
    dealer.setsockopt(zmq.RCVHWM, hwm)
    dealer.setsockopt(zmq.RECONNECT_IVL, 100)
    dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    dealer.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    for address in addresses:
        dealer.connect(address)
    return dealer


def watched_dealer(context: zmq.Context[Any], addresses: list[str], hwm: int, events: int,
                   on_event: Callable[[int], None],
                   routing_id: bytes = b"") -> tuple[zmq.Socket[Any], SocketMonitor]:
    """A :func:`service_dealer` watched by a :class:`SocketMonitor` (``on_event`` for each of
    ``events``) from before it connects, so that its first handshake is seen too; start the
    monitor in the loop that reads it."""
    dealer = service_dealer(context, [], hwm, routing_id)
    monitor = SocketMonitor(dealer, events, on_event)
    for address in addresses:
        dealer.connect(address)
    return dealer, monitor


def monitor_event(frames: list[bytes]) -> int | None:
    """The event of a ZeroMQ socket monitor's message (None: not one)."""
    try:
        return int(parse_monitor_message(frames)["event"])
    except (RuntimeError, ValueError):
        return None


#: Told which queued messages could not be sent: (peer, their tags, the error).
SendFailed = Callable[[bytes, list[Any], zmq.ZMQError], None]


class LoopSocket:
    """Calls ``on_message(frames)`` for every message received; sends never block."""

    __slots__ = ("_batches", "_fd", "_flushing", "_loop", "_on_message", "_scheduled",
                 "_send_failed", "socket")

    def __init__(
        self, socket: zmq.Socket[Any], on_message: Callable[[list[bytes]], None],
        send_failed: SendFailed | None = None,
    ) -> None:
        self.socket = socket
        self._on_message = on_message
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False
        self._fd = int(socket.getsockopt(zmq.FD))
        #: Messages queued by :meth:`send_soon`, by peer: (bodies, tags).
        self._batches: dict[bytes, tuple[list[bytes], list[Any]]] = {}
        self._flushing = False
        self._send_failed = send_failed

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._readable)
        self.kick()

    def kick(self) -> None:
        """Read whatever is waiting in the next loop iteration (once per iteration)."""
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._readable)

    def send(self, data: bytes) -> None:
        """Queue one message; raises ``zmq.Again`` when it cannot be queued."""
        self.socket.send(data, zmq.NOBLOCK)
        self._recheck()

    def send_multipart(self, frames: Sequence[bytes]) -> None:
        """Queue one multipart message; raises ``zmq.Again`` when it cannot be queued."""
        self.socket.send_multipart(frames, zmq.NOBLOCK)
        self._recheck()

    def send_soon(self, body: bytes, peer: bytes = b"", tag: Any = None) -> None:
        """Queue one message for the end of this loop iteration, with every other message
        queued for ``peer`` (a ROUTER's identity; none for a DEALER) in it (see the module
        docstring). If the batch cannot be sent, ``send_failed`` is told its ``tag``s."""
        batch = self._batches.get(peer)
        if batch is None:
            self._batches[peer] = ([body], [tag])
            if not self._flushing:
                self._flushing = True
                loop = self._loop or asyncio.get_running_loop()
                loop.call_soon(self.flush)
        else:
            batch[0].append(body)
            batch[1].append(tag)

    def flush(self) -> None:
        """Send what :meth:`send_soon` queued (called at the end of the loop iteration)."""
        self._flushing = False
        batches, self._batches = self._batches, {}
        socket = self.socket
        if socket.closed:
            return
        for peer, (bodies, tags) in batches.items():
            try:
                socket.send_multipart([peer, *bodies] if peer else bodies, zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                if self._send_failed is not None:
                    try:
                        self._send_failed(peer, tags, exc)
                    except Exception:
                        log.exception("handling a batch that could not be sent failed")
        with contextlib.suppress(zmq.ZMQError):
            self._recheck()

    def setsockopt(self, option: int, value: Any) -> None:
        self.socket.setsockopt(option, value)
        self._recheck()

    def _recheck(self) -> None:
        if int(self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self.kick()

    def _readable(self) -> None:
        self._scheduled = False
        socket = self.socket
        if socket.closed:
            return
        handle = self._on_message
        for _ in range(BURST):
            if not int(socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                return
            frames = socket.recv_multipart(zmq.NOBLOCK)
            try:
                handle(frames)
            except Exception:
                log.exception("handling a ZeroMQ message failed")
            if socket.closed:  # the handler closed it
                return
        self.kick()  # more waiting: go on after other work had its turn

    def drain(self, limit: int = 100_000) -> int:
        """Handle every message waiting now (bounded), before answering something that must
        not miss them; returns how many."""
        socket, handle, count = self.socket, self._on_message, 0
        while count < limit and not socket.closed and \
                int(socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            frames = socket.recv_multipart(zmq.NOBLOCK)
            count += 1
            try:
                handle(frames)
            except Exception:
                log.exception("handling a ZeroMQ message failed")
        return count

    def stop_reading(self) -> None:
        """No more input (sending still works): for a graceful stop."""
        if self._loop is not None and not self.socket.closed and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._loop = None

    def close(self, linger: int = 0) -> None:
        """Send what is queued (a stopping service's last replies), then close; ``linger``:
        milliseconds libzmq may take to pass on what it holds (0: nothing is waited for)."""
        if self._batches:
            self.flush()
        self.stop_reading()
        self.socket.close(linger=linger)


class SocketMonitor:
    """A ZeroMQ socket monitor read by the loop: ``on_event(event)`` for each watched event.

    It is closed in the one order that cannot hang. libzmq's I/O thread hands each event to
    the monitor with a *blocking* send, under the lock that ``disable_monitor`` also takes.
    Once the reading end is closed, the next event (a peer dropping while this process
    stops, as every peer does when a whole cluster is stopped) blocks that thread for good,
    and ``disable_monitor`` then waits forever for the lock: the process hangs in its
    shutdown until it is killed. So the monitor is disabled first, then its end closed.
    """

    __slots__ = ("_reader", "_watched")

    def __init__(self, watched: zmq.Socket[Any], events: int,
                 on_event: Callable[[int], None]) -> None:
        self._watched = watched

        def handle(frames: list[bytes]) -> None:
            event = monitor_event(frames)
            if event is not None:
                on_event(event)

        self._reader = LoopSocket(watched.get_monitor_socket(events), handle)

    def start(self) -> None:
        self._reader.start()

    def close(self) -> None:
        if not self._watched.closed:
            with contextlib.suppress(zmq.ZMQError):
                self._watched.disable_monitor()
        self._reader.close()
