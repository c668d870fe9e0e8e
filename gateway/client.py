"""One WebSocket connection: the sans-I/O :class:`~gateway.protocol.Connection` plus the
thin I/O around it (direct frame writes, a timer, an ordered work lane).

Output goes straight to the transport as pre-encoded WebSocket frames (see
:mod:`gateway.wsframe`): fan-out writes the same bytes to every member without a task, a
queue or a per-socket encode. The transport's buffer is the only queue; a client whose
buffer grows past ``write_limit`` bytes is too slow and is disconnected, which bounds the
memory one reader that stopped reading can cost.

Nothing here decides anything about namespaces or events: that is :mod:`gateway.server`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from websockets.protocol import State

from gateway import wsframe
from gateway.fanout import NsSocket
from gateway.protocol import Connection

if TYPE_CHECKING:
    from gateway.transport import WsTransport

log = logging.getLogger("switchboard.gateway.client")


#: Packets of one connection handled at once before it stops being read (backpressure).
MAX_INFLIGHT = 256


class Turn:
    """One packet's place in its connection's order (see :meth:`Client.submit`)."""

    __slots__ = ("barrier", "done", "prev_done", "prev_sent", "sent")

    def __init__(
        self,
        prev_sent: asyncio.Future[None] | None,
        prev_done: asyncio.Future[None] | None,
        sent: asyncio.Future[None],
        done: asyncio.Future[None],
        barrier: bool,
    ) -> None:
        self.prev_sent = prev_sent
        self.prev_done = prev_done
        self.sent = sent
        self.done = done
        self.barrier = barrier

    async def may_send(self) -> None:
        """Wait until the previous packet's ordered request is on its way."""
        if self.prev_sent is not None and not self.prev_sent.done():
            await self.prev_sent

    async def may_apply(self) -> None:
        """Wait until the previous packet is completely handled."""
        if self.prev_done is not None and not self.prev_done.done():
            await self.prev_done

    def finish(self) -> None:
        for future in (self.sent, self.done):
            if not future.done():
                future.set_result(None)


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
        "_done_tail",
        "_paused",
        "_sent_tail",
        "_tasks",
        "_timer",
        "address",
        "closing",
        "conn",
        "corker",
        "headers",
        "inflight",
        "link",
        "lost",
        "on_slow",
        "pending",
        "sockets",
        "started",
        "transport",
        "write_limit",
    )

    def __init__(
        self,
        link: WsTransport,
        conn: Connection,
        address: str,
        headers: dict[str, str],
        write_limit: int,
        on_slow: Callable[[Client], None],
        corker: Corker,
    ) -> None:
        self.link = link
        assert link.transport is not None
        self.transport = link.transport
        self.lost = False
        self.started = 0.0
        self.conn = conn
        self.address = address
        self.headers = headers
        self.sockets: dict[str, NsSocket] = {}
        self.write_limit = write_limit
        self.on_slow = on_slow
        self.corker = corker
        self.pending: list[bytes] | None = None
        self.closing = False
        self._sent_tail: asyncio.Future[None] | None = None
        self._done_tail: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.inflight = 0
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None

    # -- output ------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue pre-encoded frames for this loop iteration's write; a client too slow to
        keep up is disconnected.

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
        if self.closing or self.link.protocol.state is not State.OPEN:
            return
        if self.transport.get_write_buffer_size() > self.write_limit:
            self.closing = True
            self.on_slow(self)
            return
        self.pending = [data]
        self.corker.add(self)

    def write_pending(self) -> None:
        pending = self.pending
        if pending is not None:
            self.pending = None
            if not self.transport.is_closing():
                self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def flush(self) -> None:
        """Write what the protocol queued (handshake, acks, emits, pings)."""
        frames = self.conn.data_to_send()
        if frames:
            self.write(b"".join(wsframe.encode(f) for f in frames))

    @property
    def buffered(self) -> int:
        queued = sum(map(len, self.pending)) if self.pending else 0
        return int(self.transport.get_write_buffer_size()) + queued

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until the transport has handed everything to the kernel."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.buffered and loop.time() < deadline and not self.transport.is_closing():
            await asyncio.sleep(0.005)

    # -- ordered work ------------------------------------------------------------------------
    def submit(self, work: Callable[[Turn], Awaitable[None]], barrier: bool = False) -> None:
        """Start ``work(turn)`` now, ordered after everything submitted before it.

        Socket.IO keeps a socket's packets in order, but waiting for each event's replies
        before starting the next would cap one socket at one pipeline round trip per event.
        So work runs concurrently and orders itself through its :class:`Turn`: it awaits
        ``turn.may_send()`` before the request that must stay in order (the owner's), and
        ``turn.may_apply()`` before it touches the socket. A ``barrier`` (CONNECT) waits for
        everything before it to finish, and everything after waits for it. With
        ``MAX_INFLIGHT`` packets in flight the connection stops being read until half have
        finished: a flood is served, in order, at the pace of the services, in bounded memory.
        """
        loop = asyncio.get_running_loop()
        turn = Turn(self._sent_tail, self._done_tail, loop.create_future(),
                    loop.create_future(), barrier)
        self._sent_tail = turn.done if barrier else turn.sent
        self._done_tail = turn.done
        self.inflight += 1
        task = loop.create_task(self._run(work, turn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self.inflight >= MAX_INFLIGHT and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    async def _run(self, work: Callable[[Turn], Awaitable[None]], turn: Turn) -> None:
        try:
            if turn.barrier:
                await turn.may_apply()
            await work(turn)
        except Exception:
            log.exception("handling a packet from %s failed", self.conn.sid)
        finally:
            turn.finish()
            self.inflight -= 1
            if self._paused and self.inflight <= MAX_INFLIGHT // 2:
                self._paused = False
                if not self.transport.is_closing():
                    self.transport.resume_reading()

    @property
    def busy(self) -> bool:
        return self.inflight > 0

    # -- timers ------------------------------------------------------------------------------
    def schedule(self, callback: Callable[[], Any]) -> None:
        deadline = self.conn.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        if deadline is not None and not self.conn.closed:
            self._timer = asyncio.get_running_loop().call_at(deadline, callback)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # The lane is not cancelled: work in flight finishes and sees ``conn.closed``, so
        # services that accepted a half-done CONNECT still hear the DISCONNECT.
