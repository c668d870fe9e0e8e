"""Persistence of rooms and messages: :class:`RoomStore`, kept in SQLite (one file per
instance, the default) or PostgreSQL (one database every instance shares).

Writes are queued, not awaited: ``insert_room``, ``delete_room`` and ``insert_message``
return at once, in the order they were called, and a handler awaits :meth:`committed`
before it acknowledges or publishes, so nothing is acknowledged that a crash could still
take back. Keeping the write itself free of ``await`` is what lets a handler check a room
and change it atomically with respect to every other request of the event loop (the
in-memory rooms are the truth; the store is what survives a restart).

Both stores group-commit chat messages: many per transaction under load, since a commit
costs several inserts (SQLite: 74 µs per message in autocommit, 23 µs in batches; for
PostgreSQL see ``docs/benchmarks.md``). A failed commit fails every handler waiting on it
(its sender gets ``internal error``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from switchboard.shared import postgres
from switchboard.shared.errors import Fenced
from switchboard.shared.sqlite import open_database
from switchboard.shared.store import StoreConfig

from .model import Message, Room

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    private       INTEGER NOT NULL,
    password_hash TEXT,
    max_users     INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL,
    creator       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    namespace  TEXT NOT NULL,
    room       TEXT,
    sender     TEXT NOT NULL,
    recipient  TEXT,
    username   TEXT NOT NULL,
    content    TEXT NOT NULL,
    type       TEXT NOT NULL,
    ts_ms      INTEGER NOT NULL,
    room_seq   INTEGER
);
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (namespace, room, seq);
"""

#: A file of schema version 1 has no ``room_seq``: numbered as each room's messages were
#: kept (``seq`` is the order they were stored in, the order they were numbered in since).
_NUMBER_OLD_MESSAGES = """
ALTER TABLE messages ADD COLUMN room_seq INTEGER;
UPDATE messages SET room_seq = (
    SELECT COUNT(*) FROM messages AS earlier WHERE earlier.namespace = messages.namespace
    AND earlier.room = messages.room AND earlier.seq <= messages.seq
) WHERE room IS NOT NULL AND recipient IS NULL;
"""

_MESSAGE_COLUMNS = (
    "id, namespace, room, sender, recipient, username, content, type, ts_ms, room_seq"
)
#: A room's latest number is its message stored last (the room's index is by ``seq``): its
#: owner numbers them in the order it stores them. Placeholders: SQLite's, or PostgreSQL's.
_LAST_NUMBER = ("SELECT room_seq FROM messages WHERE namespace = {} AND room = {} "
                "ORDER BY seq DESC LIMIT 1")


class RoomStore(Protocol):
    """What the room service asks of its store (see the module docstring)."""

    async def open(self) -> None:
        """Connect, and bring the schema up to date."""

    async def close(self) -> None:
        """Commit what is queued, and let go."""

    async def load_rooms(self) -> list[Room]:
        """Every room kept, oldest first (also other instances' in a shared store)."""

    def insert_room(self, room: Room) -> None:
        """Queue a new room (see :meth:`committed`)."""

    def delete_room(self, room_id: str) -> None:
        """Queue the deletion of a room and its history: a later room of the same name
        starts clean, and its new members never read what was said before they could have
        been there."""

    def insert_message(self, message: Message) -> None:
        """Queue a message (see :meth:`committed`)."""

    async def committed(self) -> None:
        """Return once every write queued so far is committed (raises if it failed)."""

    async def message_seq(self, namespace: str, room: str, message_id: str) -> int | None:
        """The position of a message of that room (for ``before=<message id>``)."""

    async def last_number(self, namespace: str, room: str) -> int:
        """The number (``Message.seq``) of the room's latest committed message; 0: none."""

    async def history(self, namespace: str, room: str, limit: int,
                      before_seq: int | None = None,
                      before_ms: int | None = None) -> list[Message]:
        """The ``limit`` latest committed messages of a room before a cursor, oldest
        first."""

    async def messages_count(self) -> int:
        """Messages kept (of every instance, in a shared store)."""


def open_store(config: StoreConfig, room_db: str) -> RoomStore:
    """The store ``config`` names (not yet opened)."""
    if config.postgresql:
        return PostgresStore(config)
    return SqliteStore(room_db)


class SqliteStore:
    """Rooms and messages in one SQLite file (WAL).

    Statements run inline on the event loop: each is a short indexed statement on a local
    file. Room changes are autocommitted, each its own transaction, so a crash never leaves
    half a change behind. Messages join the event-loop iteration's transaction: the first
    insert of an iteration opens it, later inserts join it, and it commits at the start of
    the next iteration.
    """

    def __init__(self, path: str) -> None:
        self.db = open_database(path, _SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(messages)")}
        if "room_seq" not in columns:
            self.db.executescript(f"BEGIN; {_NUMBER_OLD_MESSAGES} COMMIT;")
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        #: The open group commit's outcome, or None when no transaction is open.
        self._batch: asyncio.Future[None] | None = None

    async def open(self) -> None:
        """Nothing to do: the constructor opened the file (a local one, so at once)."""

    async def close(self) -> None:
        self._end_batch()
        self.db.close()

    # -- group commit -----------------------------------------------------------------------
    def _begin_batch(self) -> None:
        if self._batch is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # called outside an event loop: plain autocommit
        self.db.execute("BEGIN")
        self._batch = loop.create_future()
        loop.call_soon(self._end_batch)

    def _end_batch(self) -> None:
        batch, self._batch = self._batch, None
        if batch is None:
            return
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK")
            if not batch.done():
                batch.set_exception(exc)
        else:
            if not batch.done():
                batch.set_result(None)

    async def committed(self) -> None:
        """Return once every message inserted so far is committed (raises if it failed)."""
        if self._batch is not None:
            await self._batch

    # -- rooms ----------------------------------------------------------------------------
    async def load_rooms(self) -> list[Room]:
        rows = self.db.execute(
            "SELECT id, name, private, password_hash, max_users, created_ms, creator "
            "FROM rooms ORDER BY created_ms, id"
        ).fetchall()
        return [Room(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def insert_room(self, room: Room) -> None:
        self._end_batch()
        self.db.execute(
            "INSERT INTO rooms (id, name, private, password_hash, max_users, created_ms, creator)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (room.id, room.name, int(room.private), room.password_hash, room.max_users,
             room.created_ms, room.creator),
        )

    def delete_room(self, room_id: str) -> None:
        self._end_batch()
        self.db.execute("BEGIN")
        try:
            self.db.execute("DELETE FROM messages WHERE namespace = '/' AND room = ?",
                            (room_id,))
            self.db.execute("DELETE FROM rooms WHERE id = ?", (room_id,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # -- messages -------------------------------------------------------------------------
    def insert_message(self, message: Message) -> None:
        self._begin_batch()
        self.db.execute(
            f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (message.id, message.namespace, message.room, message.sender, message.recipient,
             message.username, message.content, message.type, message.ts_ms, message.seq),
        )

    async def last_number(self, namespace: str, room: str) -> int:
        row = self.db.execute(_LAST_NUMBER.format("?", "?"),
                              (namespace, room)).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    async def message_seq(self, namespace: str, room: str, message_id: str) -> int | None:
        row = self.db.execute(
            "SELECT seq FROM messages WHERE id = ? AND namespace = ? AND room = ?",
            (message_id, namespace, room),
        ).fetchone()
        return None if row is None else int(row[0])

    async def history(
        self,
        namespace: str,
        room: str,
        limit: int,
        before_seq: int | None = None,
        before_ms: int | None = None,
    ) -> list[Message]:
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE namespace = ? AND room = ?"
        params: list[object] = [namespace, room]
        if before_seq is not None:
            sql += " AND seq < ?"
            params.append(before_seq)
        if before_ms is not None:
            sql += " AND ts_ms < ?"
            params.append(before_ms)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        rows = self.db.execute(sql, params).fetchall()
        return [Message(*row) for row in reversed(rows)]

    async def messages_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


#: The PostgreSQL schema, step by step (:func:`switchboard.shared.postgres.connect`).
MIGRATIONS: tuple[postgres.Migration, ...] = ((1, """
CREATE TABLE rooms (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    private       BOOLEAN NOT NULL,
    password_hash TEXT,
    max_users     INTEGER NOT NULL,
    created_ms    BIGINT NOT NULL,
    creator       TEXT NOT NULL
);
CREATE TABLE messages (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    namespace  TEXT NOT NULL,
    room       TEXT,
    sender     TEXT NOT NULL,
    recipient  TEXT,
    username   TEXT NOT NULL,
    content    TEXT NOT NULL,
    type       TEXT NOT NULL,
    ts_ms      BIGINT NOT NULL
);
CREATE INDEX messages_by_room ON messages (namespace, room, seq);
"""), (2, """
CREATE TABLE room_leases (
    instance   TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    applied    BIGINT NOT NULL
);
CREATE TABLE room_membership (
    one     BOOLEAN PRIMARY KEY CHECK (one),
    epoch   BIGINT NOT NULL,
    members TEXT[] NOT NULL
);
INSERT INTO room_membership (one, epoch, members) VALUES (TRUE, 0, '{}');
"""), (3, """
-- The fence at COMMIT time: a batch touches its writer's lease row first (_GUARD); this
-- deferred trigger then refuses the COMMIT itself if the lease expired meanwhile (a writer
-- frozen between its check and its COMMIT), by the server's clock, the clock renewals use.
CREATE FUNCTION room_lease_fence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION 'the lease of % lapsed before this commit', NEW.instance
            USING ERRCODE = 'SB001';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER room_lease_fence AFTER UPDATE ON room_leases
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION room_lease_fence();
"""), (4, """
-- Each room's messages numbered 1, 2, 3... (Message.seq), those kept before as they were kept.
ALTER TABLE messages ADD COLUMN room_seq BIGINT;
UPDATE messages SET room_seq = numbered.n FROM (
    SELECT seq, row_number() OVER (PARTITION BY namespace, room ORDER BY seq) AS n
    FROM messages WHERE room IS NOT NULL AND recipient IS NULL
) AS numbered WHERE messages.seq = numbered.seq;
"""))

_INSERT_ROOM = (
    "INSERT INTO rooms (id, name, private, password_hash, max_users, created_ms, creator) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET name = $2, "
    "private = $3, password_hash = $4, max_users = $5, created_ms = $6, creator = $7"
)
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({_MESSAGE_COLUMNS}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)


#: A batch's guard in the store (fencing): this process holds its instance's lease, and it
#: has not expired. Touching the row also arms the lease's deferred trigger (migration 3),
#: which checks the expiry again at COMMIT. (What the writes were made under is judged in
#: the process: :meth:`LeaseHolder.holds`.)
_GUARD = ("UPDATE room_leases SET holder = holder WHERE instance = $1 AND holder = $2 "
          "AND expires_at > clock_timestamp() RETURNING 1")


class LeaseHolder(Protocol):
    """Whose writes a store guards (``services/room/leases.py``)."""

    @property
    def instance(self) -> str: ...
    @property
    def holder(self) -> str: ...

    def stamp(self) -> object:
        """What a write is made under (the lease's term and the members' epoch)."""

    def holds(self, stamps: list[object]) -> bool:
        """Whether writes made under ``stamps`` may still commit."""


class _LeaseGuard:
    """A :class:`~switchboard.shared.postgres.Guard` by a lease."""

    def __init__(self, lease: LeaseHolder) -> None:
        self.lease = lease

    def stamp(self) -> object:
        return self.lease.stamp()

    def check(self, stamps: list[object]) -> postgres.Statement:
        if not self.lease.holds(stamps):
            raise Fenced(f"writes of {self.lease.instance} made under a lapsed lease or "
                         "other members")
        return _GUARD, (self.lease.instance, self.lease.holder)


@dataclass(frozen=True)
class LeaseView:
    """The members as the store has them after a renewal: live instances (unexpired leases)
    of the configured ones, as of ``epoch``; ``unapplied``: those of them whose process has
    not yet applied ``epoch``."""

    epoch: int
    members: tuple[str, ...]
    unapplied: frozenset[str]
    #: Another process of this instance holds the lease now (a restart in place while this
    #: one was thought dead): this one must stop.
    replaced: bool = False


class PostgresStore(postgres.Component):
    """Rooms and messages in a PostgreSQL database every instance shares.

    Rooms are partitioned by id, so each row has one writer: its owner. A room row left by
    an earlier owner (before the instances were re-listed) is taken over as the new
    owner's memory says (the insert is an upsert). Every write goes through one
    :class:`~switchboard.shared.postgres.GroupCommit`, so room changes and messages commit
    in the order they were made; reads use the pool's other connections.
    """

    component = "room"
    migrations = MIGRATIONS

    def fence(self, lease: LeaseHolder) -> None:
        """From now on every batch commits only while ``lease`` holds what its writes were
        made under, and the store agrees that the lease is this process's."""
        self.writes.guard = _LeaseGuard(lease)

    async def renew(self, instance: str, holder: str, ttl: float, applied: int,
                    configured: tuple[str, ...], take_over: bool = False) -> LeaseView:
        """Renew ``instance``'s lease for ``holder``, and move the members on if the live
        ones changed. ``take_over``: the first renewal of a new process, which takes the
        lease from an earlier process of the same instance; any later renewal finding
        another holder says ``replaced`` instead, and changes nothing."""
        async with self.writes.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT epoch, members FROM room_membership FOR UPDATE")
            held = await conn.fetchval(
                "SELECT holder FROM room_leases WHERE instance = $1 FOR UPDATE", instance)
            if held is not None and held != holder and not take_over:
                return LeaseView(int(row[0]), tuple(row[1]), frozenset(), replaced=True)
            await conn.execute(
                "INSERT INTO room_leases (instance, holder, expires_at, applied) "
                "VALUES ($1, $2, now() + make_interval(secs => $3), $4) "
                "ON CONFLICT (instance) DO UPDATE SET holder = $2, "
                "expires_at = now() + make_interval(secs => $3), applied = $4",
                instance, holder, ttl, applied)
            return await self._members_now(conn, row, configured)

    async def leave(self, instance: str, holder: str, configured: tuple[str, ...]) -> LeaseView:
        """Give ``instance``'s lease back (``holder``'s, if it still is), and move the
        members on without it: the others take its keys at their next renewal, without
        waiting for the lease to lapse. A new process of it renews as any joining one."""
        async with self.writes.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT epoch, members FROM room_membership FOR UPDATE")
            # Deleted, not expired: the lease row's COMMIT fence (migration 3) is an
            # UPDATE trigger, which would refuse an expiry set to now.
            await conn.execute("DELETE FROM room_leases WHERE instance = $1 AND holder = $2",
                               instance, holder)
            return await self._members_now(conn, row, configured)

    @staticmethod
    async def _members_now(conn: asyncpg.Connection, row: asyncpg.Record,
                           configured: tuple[str, ...]) -> LeaseView:
        """In a transaction holding the membership row (``row``): the live instances of
        the configured ones, under a new epoch if they are not the recorded ones."""
        live = await conn.fetch(
            "SELECT instance, applied FROM room_leases "
            "WHERE expires_at > now() AND instance = ANY($1::TEXT[]) ORDER BY instance",
            list(configured))
        members = tuple(r[0] for r in live)
        epoch = int(row[0])
        if list(members) != list(row[1]):
            epoch += 1
            await conn.execute("UPDATE room_membership SET epoch = $1, members = $2",
                               epoch, list(members))
        return LeaseView(epoch, members,
                         frozenset(r[0] for r in live if int(r[1]) < epoch))

    async def load_rooms(self) -> list[Room]:
        rows = await self.writes.pool.fetch(
            "SELECT id, name, private, password_hash, max_users, created_ms, creator "
            "FROM rooms ORDER BY created_ms, id")
        return [Room(*row) for row in rows]

    def insert_room(self, room: Room) -> None:
        self.writes.write(_INSERT_ROOM, room.id, room.name, room.private, room.password_hash,
                          room.max_users, room.created_ms, room.creator)

    def delete_room(self, room_id: str) -> None:
        # Both in one batch, so in one transaction.
        self.writes.write("DELETE FROM messages WHERE namespace = '/' AND room = $1", room_id)
        self.writes.write("DELETE FROM rooms WHERE id = $1", room_id)

    def insert_message(self, message: Message) -> None:
        self.writes.write(_INSERT_MESSAGE, message.id, message.namespace, message.room,
                          message.sender, message.recipient, message.username,
                          message.content, message.type, message.ts_ms, message.seq)

    async def last_number(self, namespace: str, room: str) -> int:
        value = await self.writes.pool.fetchval(_LAST_NUMBER.format("$1", "$2"), namespace, room)
        return 0 if value is None else int(value)

    async def message_seq(self, namespace: str, room: str, message_id: str) -> int | None:
        seq = await self.writes.pool.fetchval(
            "SELECT seq FROM messages WHERE id = $1 AND namespace = $2 AND room = $3",
            message_id, namespace, room)
        return None if seq is None else int(seq)

    async def history(
        self,
        namespace: str,
        room: str,
        limit: int,
        before_seq: int | None = None,
        before_ms: int | None = None,
    ) -> list[Message]:
        # One statement text for every cursor (NULL: no bound), so it is prepared once.
        rows = await self.writes.pool.fetch(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE namespace = $1 AND room = $2 "
            "AND ($3::BIGINT IS NULL OR seq < $3) AND ($4::BIGINT IS NULL OR ts_ms < $4) "
            "ORDER BY seq DESC LIMIT $5",
            namespace, room, before_seq, before_ms, limit)
        return [Message(*row) for row in reversed(rows)]

    async def messages_count(self) -> int:
        return int(await self.writes.pool.fetchval("SELECT COUNT(*) FROM messages"))
