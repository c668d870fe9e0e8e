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
import collections
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


class Client:
    __slots__ = (
        "_lane",
        "_lane_task",
        "_timer",
        "address",
        "closing",
        "conn",
        "headers",
        "link",
        "lost",
        "on_slow",
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
        self.closing = False
        self._lane: collections.deque[Callable[[], Awaitable[None]]] = collections.deque()
        self._lane_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- output ------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Write pre-encoded frames; a client too slow to keep up is disconnected."""
        if self.closing or self.link.protocol.state is not State.OPEN:
            return
        transport = self.transport
        if transport.get_write_buffer_size() > self.write_limit:
            self.closing = True
            self.on_slow(self)
            return
        transport.write(data)

    def flush(self) -> None:
        """Write what the protocol queued (handshake, acks, emits, pings)."""
        frames = self.conn.data_to_send()
        if frames:
            self.write(b"".join(wsframe.encode(f) for f in frames))

    @property
    def buffered(self) -> int:
        return int(self.transport.get_write_buffer_size())

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until the transport has handed everything to the kernel."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.buffered and loop.time() < deadline and not self.transport.is_closing():
            await asyncio.sleep(0.005)

    # -- ordered work ------------------------------------------------------------------------
    def enqueue(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` after everything queued before it (Socket.IO keeps packet order)."""
        self._lane.append(work)
        if self._lane_task is None:
            self._lane_task = asyncio.create_task(self._run_lane())

    async def _run_lane(self) -> None:
        try:
            while self._lane and not self.conn.closed:
                work = self._lane.popleft()
                try:
                    await work()
                except Exception:
                    log.exception("handling a packet from %s failed", self.conn.sid)
        finally:
            self._lane.clear()
            self._lane_task = None

    @property
    def busy(self) -> bool:
        return self._lane_task is not None

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
