"""The numbers of each room's messages (``seq``: 1, 2, 3... per room), which let a member
see that it missed one: the next number of every room this instance owns, read from the
store at a room's first message and counted on in memory.

Only a room's owner numbers its messages, and it numbers them in the order it queues them,
which is the order they are stored and published in. A room that moves is counted on by
its new owner from the store, after the old one let go (``services/room/leases.py``).
When the members change, the writes queued before are refused (fencing) and their
numbers are given again: counting :meth:`pauses` while the instance lets go of its queued
writes, and goes on from the store once they are drained. Otherwise a number is not
reused: a message refused after it got one because the store failed its batch (its sender
was told ``internal error``) leaves a gap that no member missed.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

Key = tuple[str, str]  # (namespace, room)


class NumberSource(Protocol):
    async def last_number(self, namespace: str, room: str) -> int: ...


class Numbering:
    """The one owner of the rooms' next message numbers."""

    def __init__(self, store: NumberSource) -> None:
        self.store = store
        self._last: dict[Key, int] = {}
        #: Rooms whose last number is being read (every message waiting takes the next).
        self._reading: dict[Key, asyncio.Future[int]] = {}
        #: Moved on by :meth:`forget_all`: a read begun before it is read again.
        self._generation = 0
        #: Set while counting is paused (:meth:`pause`); done when it goes on.
        self._paused: asyncio.Future[None] | None = None

    def counts(self, namespace: str, room: str) -> bool:
        """Whether the room's next number is known without asking the store."""
        return (namespace, room) in self._last

    async def next(self, namespace: str, room: str) -> int:
        """The number of the room's next message. Returns without suspending once the room
        is counted, so a caller that queues its message right after keeps the order."""
        key = (namespace, room)
        while key not in self._last:
            if self._paused is not None:
                await asyncio.shield(self._paused)
                continue
            generation = self._generation
            reading = self._reading.get(key)
            if reading is None:
                reading = asyncio.ensure_future(self.store.last_number(namespace, room))
                self._reading[key] = reading
                reading.add_done_callback(
                    lambda done: self._reading.pop(key, None)
                    if self._reading.get(key) is done else None)
            last = await asyncio.shield(reading)
            if generation == self._generation:
                # The first waiter to resume counts from the store; the others from it.
                self._last.setdefault(key, last)
        self._last[key] += 1
        return self._last[key]

    def restart(self, namespace: str, room: str) -> None:
        """The room's history is being deleted (queued before anything said after): its
        next message is number 1."""
        self._last[(namespace, room)] = 0

    def pause(self) -> None:
        """Number nothing until :meth:`resume`, and then count every room from the store
        again (what was queued meanwhile is being committed or refused)."""
        self.forget_all()
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()

    def resume(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.set_result(None)

    def forget_all(self) -> None:
        """What this instance owns changed: count every room from the store again."""
        self._last.clear()
        self._reading.clear()
        self._generation += 1
