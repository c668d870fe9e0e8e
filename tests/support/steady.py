"""A steady sender for the fault tests: one python-socketio user sending numbered chat
messages (``#1``, ``#2``, ...) at a fixed rate over some rooms, keeping what was acked, and
when; and :func:`contents`, the numbers a member received in one room, in arrival order.

Every message the sender got a success ack for must then reach every member once, in the
order sent: the tests count what arrived (:meth:`Steady.arrived`) before they check its
order. And each member's stream of a room has no gap and no reorder by the room's own
numbering (``seq``, given by the room's owner, whichever instance that was at the time).
The loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.support.peer import UserPeer
from tests.support.polling import poll_until

#: Messages a run sends at most.
MAX_MESSAGES = 20_000


def contents(peer: UserPeer, room: str) -> list[int]:
    """The numbers of ``room``'s messages ``peer`` received, in arrival order."""
    return [int(item.data["content"][1:]) for item in peer.log
            if item.event == "chat message" and isinstance(item.data, dict)
            and item.data.get("roomId") == room]


def room_numbers(peer: UserPeer, room: str) -> list[int]:
    """The ``seq`` of each of ``room``'s messages ``peer`` received, in arrival order."""
    return [item.data["seq"] for item in peer.log
            if item.event == "chat message" and isinstance(item.data, dict)
            and item.data.get("roomId") == room]


def unbroken(numbers: list[int]) -> bool:
    """Whether ``numbers`` count up by one (no gap, no repeat, no reorder)."""
    return bool(numbers) and numbers == list(range(numbers[0], numbers[0] + len(numbers)))


class Steady:
    """``rate`` messages/s from ``sender``, message n to ``rooms[n % len(rooms)]``."""

    def __init__(self, sender: UserPeer, rooms: list[str], rate: float,
                 call_timeout: float = 5.0) -> None:
        self.sender = sender
        self.rooms = rooms
        self.rate = rate
        self.call_timeout = call_timeout
        #: Message number → its room, for every success ack; and when each was sent, acked.
        self.acked: dict[int, str] = {}
        self.acked_at: dict[int, float] = {}
        self.sent_at: dict[int, float] = {}
        #: What came instead of a success ack (a timeout, a refusal).
        self.failed: list[Any] = []
        #: Messages sent so far.
        self.n = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _one(self, n: int, room: str) -> None:
        try:
            reply = await self.sender.call("chat message", {"roomId": room, "content": f"#{n}"},
                                           timeout=self.call_timeout)
        except Exception as exc:  # a timeout or a dropped call: not acked, not counted
            self.failed.append(exc)
            return
        if isinstance(reply, dict) and reply.get("success") is True:
            self.acked[n] = room
            self.acked_at[n] = time.monotonic()
        else:
            self.failed.append(reply)

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        due = loop.time()
        while not self._stop.is_set() and self.n < MAX_MESSAGES:
            self.n += 1
            self.sent_at[self.n] = time.monotonic()
            task = asyncio.create_task(self._one(self.n, self.rooms[self.n % len(self.rooms)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += 1 / self.rate
            await asyncio.sleep(max(0.0, due - loop.time()))
        if tasks:
            await asyncio.wait(tasks, timeout=self.call_timeout * 2)

    def start(self) -> None:
        self._task = asyncio.create_task(self._send())

    async def finish(self) -> None:
        """Stop sending, and wait for the answers still due."""
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, self.call_timeout * 6)

    async def more_acked(self, count: int, what: str, bound: float) -> None:
        """Until ``count`` more messages were acked (within ``bound`` seconds)."""
        before = len(self.acked)
        await poll_until(lambda: asyncio.sleep(0, len(self.acked)),
                         lambda now: now >= before + count, what, bound)

    async def acked_in(self, room: str, sent_after: float, what: str, bound: float) -> float:
        """When the first message to ``room`` sent after ``sent_after`` was acked."""
        def first() -> float | None:
            times = [self.acked_at[n] for n, r in self.acked.items()
                     if r == room and self.sent_at[n] > sent_after]
            return min(times) if times else None

        at = await poll_until(lambda: asyncio.sleep(0, first()), lambda t: t is not None,
                              what, bound)
        assert at is not None
        return at

    def expected(self, room: str) -> list[int]:
        """The acked messages of ``room``, in the order sent."""
        return sorted(n for n, r in self.acked.items() if r == room)

    async def arrived(self, members: list[UserPeer], bound: float) -> None:
        """Every acked message reached every member once, in order, per room; nobody was
        disconnected."""
        for room in self.rooms:
            expected = self.expected(room)
            assert expected, f"nothing acked in {room}"
            for member in members:
                await _all_of(member, room, expected, bound)
                got = contents(member, room)
                assert len(got) == len(set(got)), f"{member.name}: duplicates delivered"
                assert got == sorted(got), f"{member.name}: out of order in {room}"
                seqs = room_numbers(member, room)
                assert unbroken(seqs), f"{member.name}: seq of {room} broken: {seqs}"
        for member in members:
            assert not member.disconnects["/"].is_set(), f"{member.name} was disconnected"


async def _all_of(member: UserPeer, room: str, expected: list[int], bound: float) -> None:
    await poll_until(lambda: asyncio.sleep(0, set(contents(member, room))),
                     lambda got: set(expected) <= got,
                     f"every acked message of {room} at {member.name}", bound)
