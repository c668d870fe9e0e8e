"""The room store's group commit, on a real SQLite file read by a second connection."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from switchboard.services.room.model import Message, Room
from switchboard.services.room.store import Store


def _message(n: int, room: str = "lobby") -> Message:
    return Message(f"m{n}", "/", room, "u1", None, "Ann", f"hello {n}", "text", 1_000 + n)


def _committed_ids(path: Path) -> list[str]:
    """What another process would see: a second connection reads committed rows only."""
    other = sqlite3.connect(path)
    try:
        return [row[0] for row in other.execute("SELECT id FROM messages ORDER BY seq")]
    finally:
        other.close()


async def test_inserts_of_one_iteration_commit_together_before_committed_returns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "room.sqlite3"
    store = Store(str(path))
    try:
        for n in range(3):
            store.insert_message(_message(n))
        assert _committed_ids(path) == []  # still one open transaction
        await asyncio.wait_for(store.committed(), 5.0)
        assert _committed_ids(path) == ["m0", "m1", "m2"]
        store.insert_message(_message(3))
        await asyncio.wait_for(store.committed(), 5.0)
        assert _committed_ids(path) == ["m0", "m1", "m2", "m3"]
    finally:
        store.close()


async def test_room_changes_commit_an_open_batch_first(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    store = Store(str(path))
    try:
        store.insert_message(_message(1, room="doomed"))
        store.insert_room(Room("kept", "kept", False, None, 10, 1, "u1"))
        assert _committed_ids(path) == ["m1"]
        store.insert_message(_message(2, room="doomed"))
        store.delete_room("doomed")  # a transaction of its own: no nested BEGIN error
        assert _committed_ids(path) == []
        await asyncio.wait_for(store.committed(), 5.0)
        assert [r.id for r in store.load_rooms()] == ["kept"]
    finally:
        store.close()


async def test_a_failed_insert_leaves_the_group_commit_usable(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "room.sqlite3"))
    try:
        store.insert_message(_message(1))
        store.insert_message(_message(1))  # same id: UNIQUE fails at once, batch stays open
    except sqlite3.IntegrityError:
        pass
    else:  # pragma: no cover - the schema guarantees the error
        pytest.fail("duplicate id accepted")
    try:
        await asyncio.wait_for(store.committed(), 5.0)
        assert store.messages_count() == 1
    finally:
        store.close()


def test_outside_an_event_loop_every_insert_autocommits(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    store = Store(str(path))
    try:
        store.insert_message(_message(1))
        assert _committed_ids(path) == ["m1"]
    finally:
        store.close()
