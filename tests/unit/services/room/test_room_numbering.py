"""The rooms' message numbers (``services/room/numbering.py``) over a real SQLite store:
counted from the store once per room, in the order asked, paused while a change of members
drains the queued writes and counted again from what was kept."""

from __future__ import annotations

import asyncio
from pathlib import Path

from switchboard.services.room.model import Message
from switchboard.services.room.numbering import Numbering
from switchboard.services.room.store import SqliteStore

WAIT = 5.0


def _kept(store: SqliteStore, room: str, seq: int) -> None:
    store.insert_message(Message(f"{room}-{seq}", "/", room, "u1", None, "Ann", "x", "text",
                                 1, seq))


async def test_a_room_is_counted_from_its_last_kept_message_once(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "room.sqlite3"))
    try:
        for seq in (1, 2, 3):
            _kept(store, "lobby", seq)
        await store.committed()
        numbering = Numbering(store)
        assert not numbering.counts("/", "lobby")
        # Asked at once, before the count is read: each gets the next, in the order asked.
        got = await asyncio.wait_for(asyncio.gather(
            *(numbering.next("/", "lobby") for _ in range(3))), WAIT)
        assert got == [4, 5, 6] and numbering.counts("/", "lobby")
        assert await numbering.next("/", "elsewhere") == 1
        assert await numbering.next("/chat", "lobby") == 1  # rooms are per namespace
        numbering.restart("/", "lobby")  # deleted: its history goes with it
        assert await numbering.next("/", "lobby") == 1
    finally:
        await store.close()


async def test_numbers_wait_while_paused_and_go_on_from_what_was_kept(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "room.sqlite3"))
    try:
        numbering = Numbering(store)
        assert [await numbering.next("/", "lobby") for _ in range(2)] == [1, 2]
        # Numbers 3 and 4 were handed out, but their writes are refused (a change of
        # members fenced them); 3 is kept by the drain's end from another writer.
        assert await numbering.next("/", "lobby") == 3
        assert await numbering.next("/", "lobby") == 4
        numbering.pause()
        waiting = asyncio.ensure_future(numbering.next("/", "lobby"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()  # nothing is numbered while the writes drain
        for seq in (1, 2, 3):
            _kept(store, "lobby", seq)
        await store.committed()
        numbering.resume()
        assert await asyncio.wait_for(waiting, WAIT) == 4  # 4 is given again: no gap
    finally:
        await store.close()
