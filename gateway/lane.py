"""A connection's ordered work: packets handled concurrently yet applied in order, with a
bound on how many are in flight (backpressure on the connection's reading)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("switchboard.gateway.lane")

#: Packets of one connection handled at once before it stops being read (backpressure).
MAX_INFLIGHT = 256


class Turn:
    """One packet's place in its connection's order (see :meth:`Lane.submit`)."""

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

    def nothing_sent(self) -> None:
        """This packet sends no ordered request (refused before): the next may send now."""
        if not self.sent.done():
            self.sent.set_result(None)

    def finish(self) -> None:
        for future in (self.sent, self.done):
            if not future.done():
                future.set_result(None)


class Lane:
    """The ordered work of one connection (see :meth:`submit`)."""

    __slots__ = ("_done_tail", "_label", "_pause", "_paused", "_resume", "_resume_reading",
                 "_sent_tail", "_tasks", "inflight")

    def __init__(self, label: str, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        #: Names the connection in logs.
        self._label = label
        #: Stop and restart reading the connection (a polling session: nothing to do).
        self._pause = pause
        self._resume_reading = resume
        self._sent_tail: asyncio.Future[None] | None = None
        self._done_tail: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.inflight = 0
        self._paused = False
        self._resume: list[Callable[[], None]] = []

    def submit(self, work: Callable[[Turn], Awaitable[None]], barrier: bool = False) -> None:
        """Start ``work(turn)`` now, ordered after everything submitted before it.

        Socket.IO keeps a socket's packets in order, but waiting for each event's replies
        before starting the next would cap one socket at one pipeline round trip per event.
        So work runs concurrently and orders itself through its :class:`Turn`: it awaits
        ``turn.may_send()`` before the request that must stay in order (the owner's), and
        ``turn.may_apply()`` before it touches the socket. A ``barrier`` (CONNECT) waits for
        everything before it to finish, and everything after waits for it. With
        ``MAX_INFLIGHT`` packets in flight the connection stops being read (a polling
        session's POSTs stop being answered) until half have finished: a flood is served,
        in order, at the pace of the services, in bounded memory.
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
            self._pause()

    async def _run(self, work: Callable[[Turn], Awaitable[None]], turn: Turn) -> None:
        try:
            if turn.barrier:
                await turn.may_apply()
            await work(turn)
        except Exception:
            log.exception("handling a packet from %s failed", self._label)
        finally:
            turn.finish()
            self.inflight -= 1
            if self._paused and self.inflight <= MAX_INFLIGHT // 2:
                self._paused = False
                self._resume_reading()
                callbacks, self._resume = self._resume, []
                for callback in callbacks:
                    callback()

    def when_readable(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` now, or once the lane is below its bound (a POST's answer)."""
        if self._paused:
            self._resume.append(callback)
        else:
            callback()
