"""One WebSocket connection: the sans-I/O :class:`~gateway.protocol.Connection` plus the
thin I/O around it (an outbox drained by a writer task, a timer, an ordered work lane).

Nothing here decides anything about namespaces or events: that is :mod:`gateway.server`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gateway.fanout import NsSocket
from gateway.protocol import Connection

log = logging.getLogger("switchboard.gateway.client")


class Client:
    __slots__ = (
        "_drained",
        "_lane",
        "_lane_task",
        "_timer",
        "_wake",
        "_writer",
        "address",
        "closing",
        "conn",
        "headers",
        "on_slow",
        "outbox",
        "outbox_limit",
        "sockets",
        "ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        conn: Connection,
        address: str,
        headers: dict[str, str],
        outbox_limit: int,
        on_slow: Callable[[Client], None],
    ) -> None:
        self.ws = ws
        self.conn = conn
        self.address = address
        self.headers = headers
        self.sockets: dict[str, NsSocket] = {}
        self.outbox: collections.deque[str | bytes] = collections.deque()
        self.outbox_limit = outbox_limit
        self.on_slow = on_slow
        self.closing = False
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._lane: collections.deque[Callable[[], Awaitable[None]]] = collections.deque()
        self._lane_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- output ------------------------------------------------------------------------------
    def push(self, frames: list[str | bytes]) -> None:
        """Queue frames for the writer; a client too slow to keep up is disconnected."""
        if self.closing:
            return
        if len(self.outbox) + len(frames) > self.outbox_limit:
            self.closing = True
            self.outbox.clear()
            self.on_slow(self)
            return
        self.outbox.extend(frames)
        self._wake.set()

    def flush(self) -> None:
        """Move what the protocol queued into the outbox."""
        frames = self.conn.data_to_send()
        if frames:
            self.push(frames)

    def start_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_loop())

    async def _write_loop(self) -> None:
        ws = self.ws
        outbox = self.outbox
        try:
            while True:
                while outbox:
                    await ws.send(outbox.popleft())
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
        except ConnectionClosed:
            pass

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until everything queued so far has been handed to the transport."""
        if not self.outbox or self._writer is None or self._writer.done():
            return
        self._drained.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout)

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
        if self._writer is not None:
            self._writer.cancel()
        # The lane is not cancelled: work in flight finishes and sees ``conn.closed``, so
        # services that accepted a half-done CONNECT still hear the DISCONNECT.
