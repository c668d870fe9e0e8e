"""The room store on both backends: group commit, ordering, history cursors, failures; and
what is each backend's own (SQLite's transactions per iteration, PostgreSQL's migrations,
pool and connection errors), each on a real file or a real server read by a second
connection."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from switchboard.services.room.model import Message, Room
from switchboard.services.room.store import (
    MIGRATIONS,
    PostgresStore,
    RoomStore,
    SqliteStore,
    open_store,
)
from switchboard.shared import postgres
from switchboard.shared.errors import ConfigError
from switchboard.shared.store import SQLITE, StoreConfig
from tests.support.postgres import PostgresServer

WAIT = 10.0


def _message(n: int, room: str = "lobby", ts_ms: int | None = None,
             seq: int | None = None) -> Message:
    return Message(f"m{n}", "/", room, "u1", None, "Ann", f"hello {n}", "text",
                   1_000 + n if ts_ms is None else ts_ms, seq)


def _room(room_id: str) -> Room:
    return Room(room_id, room_id, False, None, 10, 1, "u1")


@pytest.fixture
async def room_store(tmp_path: Path, store: dict[str, str]) -> AsyncIterator[RoomStore]:
    opened = open_store(StoreConfig(store.get("store", SQLITE)), str(tmp_path / "room.sqlite3"))
    await asyncio.wait_for(opened.open(), WAIT)
    yield opened
    await opened.close()


async def _ids(s: RoomStore, room: str = "lobby") -> list[str]:
    return [m.id for m in await s.history("/", room, 100)]


# -- both stores ------------------------------------------------------------------------------
async def test_queued_writes_are_read_back_once_committed(room_store: RoomStore) -> None:
    room_store.insert_room(_room("lobby"))
    for n in range(3):
        room_store.insert_message(_message(n))
    await asyncio.wait_for(room_store.committed(), WAIT)
    assert [r.id for r in await room_store.load_rooms()] == ["lobby"]
    assert await _ids(room_store) == ["m0", "m1", "m2"]
    assert await room_store.messages_count() == 3


async def test_a_deletion_takes_the_history_and_keeps_the_order_of_writes(
        room_store: RoomStore) -> None:
    room_store.insert_room(_room("doomed"))
    room_store.insert_message(_message(1, room="doomed"))
    room_store.insert_room(_room("kept"))
    room_store.delete_room("doomed")
    room_store.insert_room(_room("doomed"))  # the name again: it starts clean
    room_store.insert_message(_message(2, room="doomed"))
    await asyncio.wait_for(room_store.committed(), WAIT)
    assert sorted(r.id for r in await room_store.load_rooms()) == ["doomed", "kept"]
    assert await _ids(room_store, "doomed") == ["m2"]


async def test_history_pages_by_message_and_by_time(room_store: RoomStore) -> None:
    for n in range(5):
        room_store.insert_message(_message(n, ts_ms=1_000 + 10 * n))
    room_store.insert_message(_message(9, room="other"))
    await asyncio.wait_for(room_store.committed(), WAIT)
    assert [m.id for m in await room_store.history("/", "lobby", 2)] == ["m3", "m4"]
    seq = await room_store.message_seq("/", "lobby", "m3")
    assert seq is not None
    assert [m.id for m in await room_store.history("/", "lobby", 2, before_seq=seq)] == [
        "m1", "m2"]
    assert [m.id for m in await room_store.history("/", "lobby", 10, before_ms=1_020)] == [
        "m0", "m1"]
    assert await room_store.message_seq("/", "lobby", "m9") is None  # another room's
    assert await room_store.message_seq("/", "lobby", "nope") is None
    assert (await room_store.history("/", "lobby", 1))[0] == _message(4, ts_ms=1_040)


async def test_a_rooms_last_number_is_its_message_stored_last(room_store: RoomStore) -> None:
    assert await room_store.last_number("/", "lobby") == 0
    for n in (1, 2, 3):
        room_store.insert_message(_message(n, seq=n))
    room_store.insert_message(_message(4, room="other", seq=1))
    await asyncio.wait_for(room_store.committed(), WAIT)
    assert await room_store.last_number("/", "lobby") == 3
    assert await room_store.last_number("/", "other") == 1
    assert await room_store.last_number("/chat", "lobby") == 0  # rooms are per namespace
    assert [m.seq for m in await room_store.history("/", "lobby", 10)] == [1, 2, 3]


# -- SQLite ---------------------------------------------------------------------------------
def _committed_ids(path: Path) -> list[str]:
    """What another process would see: a second connection reads committed rows only."""
    other = sqlite3.connect(path)
    try:
        return [row[0] for row in other.execute("SELECT id FROM messages ORDER BY seq")]
    finally:
        other.close()


async def test_sqlite_inserts_of_one_iteration_commit_together(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    store = SqliteStore(str(path))
    try:
        for n in range(3):
            store.insert_message(_message(n))
        assert _committed_ids(path) == []  # still one open transaction
        await asyncio.wait_for(store.committed(), WAIT)
        assert _committed_ids(path) == ["m0", "m1", "m2"]
        store.insert_message(_message(3))
        await asyncio.wait_for(store.committed(), WAIT)
        assert _committed_ids(path) == ["m0", "m1", "m2", "m3"]
    finally:
        await store.close()


async def test_sqlite_room_changes_commit_an_open_batch_first(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    store = SqliteStore(str(path))
    try:
        store.insert_message(_message(1, room="doomed"))
        store.insert_room(_room("kept"))
        assert _committed_ids(path) == ["m1"]
        store.insert_message(_message(2, room="doomed"))
        store.delete_room("doomed")  # a transaction of its own: no nested BEGIN error
        assert _committed_ids(path) == []
        await asyncio.wait_for(store.committed(), WAIT)
        assert [r.id for r in await store.load_rooms()] == ["kept"]
    finally:
        await store.close()


async def test_sqlite_a_failed_insert_leaves_the_group_commit_usable(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "room.sqlite3"))
    try:
        store.insert_message(_message(1))
        with pytest.raises(sqlite3.IntegrityError):
            store.insert_message(_message(1))  # same id: UNIQUE fails at once, batch stays
        await asyncio.wait_for(store.committed(), WAIT)
        assert await store.messages_count() == 1
    finally:
        await store.close()


async def test_sqlite_outside_an_event_loop_every_insert_autocommits(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"

    def insert() -> None:
        store = SqliteStore(str(path))
        try:
            store.insert_message(_message(1))
            assert _committed_ids(path) == ["m1"]
        finally:
            store.db.close()

    await asyncio.to_thread(insert)  # a thread has no running loop


def test_sqlite_a_file_of_schema_version_1_numbers_its_kept_messages(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            namespace TEXT NOT NULL, room TEXT, sender TEXT NOT NULL, recipient TEXT,
            username TEXT NOT NULL, content TEXT NOT NULL, type TEXT NOT NULL,
            ts_ms INTEGER NOT NULL);
        PRAGMA user_version=1;""")
    for n, (room, recipient) in enumerate([("a", None), ("b", None), ("a", None),
                                           (None, None), (None, "u2"), ("a", None)]):
        old.execute("INSERT INTO messages (id, namespace, room, sender, recipient, username, "
                    "content, type, ts_ms) VALUES (?, '/', ?, 'u1', ?, 'Ann', 'x', 'text', 1)",
                    (f"m{n}", room, recipient))
    old.commit()
    old.close()
    store = SqliteStore(str(path))
    try:
        rows = store.db.execute("SELECT id, room_seq FROM messages ORDER BY seq").fetchall()
        assert rows == [("m0", 1), ("m1", 1), ("m2", 2), ("m3", None), ("m4", None),
                        ("m5", 3)]
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        store.db.close()
    SqliteStore(str(path)).db.close()  # a second open migrates nothing again


# -- PostgreSQL -----------------------------------------------------------------------------
@pytest.fixture
async def pg(postgres: PostgresServer) -> AsyncIterator[tuple[PostgresStore, str]]:
    url = postgres.fresh_url()
    store = PostgresStore(StoreConfig(url))
    await asyncio.wait_for(store.open(), WAIT)
    yield store, url
    await store.close()


async def test_postgres_writes_queued_while_one_batch_commits_form_the_next(
        pg: tuple[PostgresStore, str]) -> None:
    store, url = pg
    store.insert_message(_message(0))
    await asyncio.sleep(0)  # one loop turn: the first batch is sent, alone
    for n in range(1, 5):
        store.insert_message(_message(n))
    await asyncio.wait_for(store.committed(), WAIT)
    assert (store.writes.batches, store.writes.statements) == (2, 5)
    other = await asyncpg.connect(url)  # another connection sees them all
    try:
        assert [r[0] for r in await other.fetch("SELECT id FROM messages ORDER BY seq")] == [
            f"m{n}" for n in range(5)]
    finally:
        await other.close()


async def test_postgres_a_failed_batch_fails_its_waiters_and_the_next_goes_on(
        pg: tuple[PostgresStore, str]) -> None:
    store, _ = pg
    store.insert_message(_message(1))
    await asyncio.wait_for(store.committed(), WAIT)
    store.insert_message(_message(2))
    store.insert_message(_message(1))  # same id: the batch's transaction is rolled back
    with pytest.raises(asyncpg.UniqueViolationError):
        await asyncio.wait_for(store.committed(), WAIT)
    store.insert_message(_message(3))
    await asyncio.wait_for(store.committed(), WAIT)
    assert await _ids(store) == ["m1", "m3"]


async def test_postgres_migrations_apply_once_even_for_instances_starting_together(
        postgres: PostgresServer) -> None:
    url = postgres.fresh_url()
    stores = [PostgresStore(StoreConfig(url)) for _ in range(3)]
    await asyncio.wait_for(asyncio.gather(*(s.open() for s in stores)), WAIT)
    try:
        schema = postgres.schema_of(url)
        rows = postgres.psql(f"SELECT component, version FROM {schema}.switchboard_migrations")
        assert rows.splitlines() == [f"room|{version}" for version, _ in MIGRATIONS]
        stores[0].insert_room(_room("lobby"))
        await stores[0].committed()
        assert [r.id for r in await stores[2].load_rooms()] == ["lobby"]  # one database
    finally:
        for s in stores:
            await s.close()


async def test_postgres_a_schema_newer_than_the_code_stops_the_instance(
        postgres: PostgresServer) -> None:
    url = postgres.fresh_url()
    known = len(MIGRATIONS)
    newer = (*MIGRATIONS, (known + 1, "CREATE TABLE later (x INTEGER)"))
    pool = await postgres_connect(url, newer)
    await pool.close()
    with pytest.raises(ConfigError, match=rf"room schema in the store is at version "
                                          rf"{known + 1}, newer than this switchboard knows "
                                          rf"\({known}\)"):
        await asyncio.wait_for(PostgresStore(StoreConfig(url)).open(), WAIT)


async def test_postgres_migration_4_numbers_the_messages_kept_before(
        postgres: PostgresServer) -> None:
    url = postgres.fresh_url()
    pool = await postgres_connect(url, MIGRATIONS[:3])
    try:
        for n, room in enumerate(["a", "b", "a", None, "a"]):
            await pool.execute(
                "INSERT INTO messages (id, namespace, room, sender, recipient, username, "
                "content, type, ts_ms) VALUES ($1, '/', $2, 'u1', NULL, 'Ann', 'x', 'text', 1)",
                f"m{n}", room)
    finally:
        await pool.close()
    store = PostgresStore(StoreConfig(url))
    await asyncio.wait_for(store.open(), WAIT)
    try:
        assert [(m.id, m.seq) for m in await store.history("/", "a", 10)] == [
            ("m0", 1), ("m2", 2), ("m4", 3)]
        assert await store.last_number("/", "b") == 1
    finally:
        await store.close()


async def postgres_connect(url: str,
                           migrations: tuple[postgres.Migration, ...]) -> asyncpg.Pool:
    return await asyncio.wait_for(postgres.connect(StoreConfig(url), "room", migrations), WAIT)


async def test_postgres_a_url_naming_nothing_real_is_a_config_error(
        postgres: PostgresServer) -> None:
    from tests.support.ports import free_port_block

    nobody = free_port_block(1)
    with pytest.raises(ConfigError, match=r"--store postgresql://u:\*\*\*@127\.0\.0\.1:\d+/x: "
                                          r"cannot connect within 0\.3 s"):
        await PostgresStore(StoreConfig(f"postgresql://u:secret@127.0.0.1:{nobody}/x",
                                        store_timeout=0.3)).open()
    with pytest.raises(ConfigError, match='database "nope" does not exist'):
        await PostgresStore(StoreConfig(postgres.url("nope"))).open()


def test_store_settings_out_of_range_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="--store-pool-size must be at least 2"):
        StoreConfig("postgresql://h/db", store_pool_size=1)
    with pytest.raises(ConfigError, match="--store-timeout must be more than 0"):
        StoreConfig("postgresql://h/db", store_timeout=0)


async def test_postgres_a_server_restart_fails_the_batch_in_flight_and_no_more() -> None:
    """A restart terminates every connection: the batch being committed fails (its senders
    were not acknowledged; they resend), and the pool's next connection carries on."""
    import tempfile

    server = PostgresServer(Path(tempfile.mkdtemp(prefix="switchboard-pg-restart-")))
    server.start()
    try:
        store = PostgresStore(StoreConfig(server.fresh_url()))
        await asyncio.wait_for(store.open(), WAIT)
        try:
            store.insert_message(_message(1))
            await asyncio.wait_for(store.committed(), WAIT)
            await asyncio.to_thread(server.restart)
            outcomes = []
            for n in range(2, 5):
                store.insert_message(_message(n))
                try:
                    await asyncio.wait_for(store.committed(), WAIT)
                    outcomes.append("ok")
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    outcomes.append("failed")
            assert outcomes in (["failed", "ok", "ok"], ["ok", "ok", "ok"]), outcomes
            kept = {"m1", *(f"m{n}" for n, o in zip(range(2, 5), outcomes, strict=True)
                            if o == "ok")}
            assert set(await _ids(store)) == kept
        finally:
            await store.close()
    finally:
        server.stop()
