"""A session's way out (:class:`Output`): pre-encoded frames over its WebSocket, or the
packets a long-polling GET takes, bounded by ``write_limit``; and how the transport ends.

WebSocket output goes straight to the transport as pre-encoded frames (see
:mod:`gateway.wsframe`): fan-out writes the same bytes to every member without a task, a
queue or a per-socket encode. The transport's buffer is the only queue; a client whose
buffer grows past ``write_limit`` bytes is too slow and is disconnected, which bounds the
memory one reader that stopped reading can cost. Polling output queues in the ``Polling``
object under the same bound and leaves with the next GET.

:class:`~.client.Client` is an ``Output`` with the session's protocol state around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol

from switchboard.gateway import wsframe
from switchboard.gateway.protocol.engineio import V3_BINARY_PREFIX
from switchboard.gateway.protocol.polling import Polling
from switchboard.gateway.transport import WsTransport

#: Seconds a polling session closed by the server waits for the poll that takes its CLOSE.
CLOSE_TIMEOUT = 30.0


class Responder(Protocol):
    """Where the answer to a waiting long-polling GET goes (a local HTTP exchange, or a
    peer gateway that forwarded the request)."""

    def respond(self, body: str) -> None: ...


class CloseMode(Enum):
    """How a session ends, which decides what a waiting poll is told (see Polling)."""

    ABORT = "abort"  #: an error or timeout: at once
    GRACEFUL = "graceful"  #: the server closes: after what is queued
    SHUTDOWN = "shutdown"  #: the server goes away: after what is queued, so the client returns
    CLIENT = "client"  #: the client asked


class Corker:
    """Sessions with frames queued this loop iteration; writes them all once, soon after."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Output] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, client: Output) -> None:
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


class Output:
    """One session's way out and its state: the link or the polling queue, the unsent bytes
    and their bound, the waiting GET, and the session's one timer."""

    __slots__ = (
        "_poll_dirty",
        "_timer",
        "closing",
        "corker",
        "eio",
        "link",
        "lost",
        "on_slow",
        "pending",
        "polling",
        "responder",
        "transport",
        "write_limit",
    )

    def __init__(self, write_limit: int, on_slow: Callable[[], None], corker: Corker,
                 polling: Polling | None, eio: int) -> None:
        self.link: WsTransport | None = None  # see use()
        self.transport: asyncio.Transport | None = None
        #: The polling side while the session polls (None once on WebSocket).
        self.polling = polling
        #: The GET waiting for data (polling only).
        self.responder: Responder | None = None
        self.lost = False
        self.eio = eio
        self.write_limit = write_limit
        #: Called once when the client is too slow to keep up (it is disconnected).
        self.on_slow = on_slow
        self.corker = corker
        self.pending: list[bytes] | None = None
        self.closing = False
        self._poll_dirty = False
        #: The session's one timer: its protocol deadlines, or a closed poll's wait.
        self._timer: asyncio.TimerHandle | None = None

    def finish(self) -> None:
        """The session is over (a :class:`~.client.Client` tells its owner)."""
        raise NotImplementedError

    def use(self, link: WsTransport) -> None:
        """From now on, write over ``link``."""
        assert link.transport is not None
        self.link = link
        self.transport = link.transport
        link.before_send = self.write_pending

    def leave_polling(self) -> None:
        """The upgrade completed: no more polls (the caller then :meth:`use` s the link)."""
        self.polling = None

    def allow_buffering(self, limit: int) -> None:
        """Let this connection hold up to ``limit`` unsent bytes (at least)."""
        self.write_limit = max(self.write_limit, limit)

    def mark_lost(self) -> bool:
        """The connection is gone; False when that was known already."""
        if self.lost:
            return False
        self.lost = True
        return True

    def take_responder(self) -> Responder | None:
        """The waiting GET, which the caller answers (or gives up) itself."""
        responder, self.responder = self.responder, None
        return responder

    @property
    def transport_name(self) -> str:
        return "polling" if self.polling is not None else "websocket"

    def write(self, data: bytes) -> None:
        """Queue pre-encoded WebSocket frames for this loop iteration's write; a client too
        slow to keep up is disconnected. (Polling sessions take :meth:`queue` instead.)

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
        link = self.link
        if self.closing or link is None or not link.is_open:
            return
        transport = self.transport
        assert transport is not None
        if transport.get_write_buffer_size() > self.write_limit:
            self.closing = True
            self.on_slow()
            return
        self.pending = [data]
        self.corker.add(self)

    def queue(self, packets: list[str | bytes]) -> None:
        """Queue Engine.IO packets for the next poll (polling sessions)."""
        polling = self.polling
        assert polling is not None
        if self.closing:
            return
        polling.send(packets)
        if polling.buffered > self.write_limit:
            self.closing = True
            self.on_slow()
            return
        if not self._poll_dirty and self.responder is not None:
            self._poll_dirty = True
            self.corker.add(self)

    def send_frames(self, frames: list[str | bytes]) -> None:
        """Engine.IO packets for this session, whatever its transport."""
        if self.polling is None:
            if self.eio == 3:
                frames = [f if isinstance(f, str) else V3_BINARY_PREFIX + f for f in frames]
            self.write(b"".join(wsframe.encode(f) for f in frames))
        else:
            self.queue(frames)

    def write_pending(self) -> None:
        pending = self.pending
        if pending is not None:
            self.pending = None
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if self._poll_dirty:
            self._poll_dirty = False
            self.answer_poll()

    def answer_poll(self) -> None:
        """Answer the waiting GET if there is something to say (polling)."""
        polling, responder = self.polling, self.responder
        if polling is None or responder is None:
            return
        body = polling.flush()
        if body is None:
            return
        self.responder = None
        responder.respond(body)
        if polling.finished:
            self.finish()

    def wait_poll(self, responder: Responder) -> None:
        """A GET waits for data: answered by :meth:`answer_poll`, soon or at the next ping."""
        self.responder = responder

    @property
    def buffered(self) -> int:
        if self.polling is not None:
            return self.polling.buffered
        queued = sum(map(len, self.pending)) if self.pending else 0
        transport = self.transport
        return (int(transport.get_write_buffer_size()) if transport is not None else 0) + queued

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) until everything written has been handed to the kernel (or, when
        polling, taken by a GET)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.buffered and loop.time() < deadline and not self.lost:
            transport = self.transport
            if self.polling is None and (transport is None or transport.is_closing()):
                return
            await asyncio.sleep(0.005)

    def close(self, code: int, reason: str, mode: CloseMode = CloseMode.GRACEFUL) -> None:
        """End the transport: a WebSocket closing handshake with ``code``, or for polling
        what ``mode`` says a waiting poll is told."""
        polling = self.polling
        if polling is None:
            if self.link is not None:
                self.link.close(code, reason)
            return
        if mode is CloseMode.ABORT:
            body = polling.abort()
        elif mode is CloseMode.CLIENT:
            body = polling.client_closed()
        elif mode is CloseMode.SHUTDOWN:
            body = polling.go_away()
        else:
            body = polling.close()
        responder, self.responder = self.responder, None
        if body is not None and responder is not None:
            responder.respond(body)
        elif responder is not None:
            self.responder = responder  # still waiting: a graceful close leaves later
        if polling.finished:
            self.finish()
        elif self._timer is None or mode in (CloseMode.GRACEFUL, CloseMode.SHUTDOWN):
            # The CLOSE waits for the client's next poll, but not for ever.
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(
                CLOSE_TIMEOUT, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._timer = None
        if self.polling is not None:
            self.polling.abort()
        self.finish()

    def _pause_reading(self) -> None:
        if self.polling is None and self.transport is not None:
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def arm(self, deadline: float | None, callback: Callable[[], Any]) -> None:
        """The one timer at ``deadline`` (None: none)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, callback)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
