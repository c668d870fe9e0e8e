"""Bans and mutes, kept so they survive a moderation restart: in one small SQLite file (the
default) or in the PostgreSQL database the instances share (``--store``).

Reads happen once, at start, after which the service answers from memory. Writes are rare
(an administrator's action) and tiny, queued in order; the service awaits
:meth:`ModerationStore.committed` before it acknowledges one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from switchboard.shared import postgres
from switchboard.shared.sqlite import open_database
from switchboard.shared.store import StoreConfig

SCHEMA = """
CREATE TABLE IF NOT EXISTS bans (
    user_id    TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    until      REAL,            -- epoch seconds; NULL: permanent
    created_at REAL NOT NULL,
    created_by TEXT
);
CREATE TABLE IF NOT EXISTS mutes (
    user_id    TEXT PRIMARY KEY,
    until      REAL NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT
);
"""


@dataclass(frozen=True, slots=True)
class Ban:
    user_id: str
    reason: str
    until: float | None  #: epoch seconds; None for a permanent ban
    created_at: float
    created_by: str | None = None

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True, slots=True)
class Mute:
    user_id: str
    until: float
    created_at: float
    created_by: str | None = None

    def active(self, now: float) -> bool:
        return now < self.until


class ModerationStore(Protocol):
    """What the moderation service asks of its store."""

    async def open(self) -> None:
        """Connect, and bring the schema up to date."""

    async def close(self) -> None:
        """Commit what is queued, and let go."""

    async def active_bans(self, now: float) -> dict[str, Ban]:
        """Bans still in force (ended ones are deleted on the way)."""

    async def active_mutes(self, now: float) -> dict[str, Mute]:
        """Mutes still in force (ended ones are deleted on the way)."""

    def put_ban(self, ban: Ban) -> None: ...
    def delete_ban(self, user_id: str) -> None: ...
    def put_mute(self, mute: Mute) -> None: ...
    def delete_mute(self, user_id: str) -> None: ...

    async def committed(self) -> None:
        """Return once every write queued so far is committed (raises if it failed)."""


def open_store(config: StoreConfig, moderation_db: str) -> ModerationStore:
    """The store ``config`` names (not yet opened)."""
    if config.postgresql:
        return PostgresModerationStore(config)
    return SqliteModerationStore(moderation_db)


class SqliteModerationStore:
    """The SQLite file behind bans and mutes (``:memory:`` works too, for throwaway use).

    Every statement is its own transaction, run inline (there are no multi-step writes), so
    a write is committed when it returns.
    """

    def __init__(self, path: str) -> None:
        self.db = open_database(path, SCHEMA)

    async def open(self) -> None:
        """Nothing to do: the constructor opened the file (a local one, so at once)."""

    async def committed(self) -> None:
        """Nothing to wait for: every write committed as it ran."""

    async def active_bans(self, now: float) -> dict[str, Ban]:
        """Bans still in force (ended ones are deleted on the way)."""
        self.db.execute("DELETE FROM bans WHERE until IS NOT NULL AND until <= ?", (now,))
        rows = self.db.execute(
            "SELECT user_id, reason, until, created_at, created_by FROM bans"
        ).fetchall()
        return {row[0]: Ban(*row) for row in rows}

    async def active_mutes(self, now: float) -> dict[str, Mute]:
        self.db.execute("DELETE FROM mutes WHERE until <= ?", (now,))
        rows = self.db.execute(
            "SELECT user_id, until, created_at, created_by FROM mutes"
        ).fetchall()
        return {row[0]: Mute(*row) for row in rows}

    def put_ban(self, ban: Ban) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO bans (user_id, reason, until, created_at, created_by) "
            "VALUES (?, ?, ?, ?, ?)",
            (ban.user_id, ban.reason, ban.until, ban.created_at, ban.created_by),
        )

    def delete_ban(self, user_id: str) -> None:
        self.db.execute("DELETE FROM bans WHERE user_id = ?", (user_id,))

    def put_mute(self, mute: Mute) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO mutes (user_id, until, created_at, created_by) "
            "VALUES (?, ?, ?, ?)",
            (mute.user_id, mute.until, mute.created_at, mute.created_by),
        )

    def delete_mute(self, user_id: str) -> None:
        self.db.execute("DELETE FROM mutes WHERE user_id = ?", (user_id,))

    async def close(self) -> None:
        self.db.close()


#: The PostgreSQL schema, step by step (:func:`switchboard.shared.postgres.connect`).
MIGRATIONS: tuple[postgres.Migration, ...] = ((1, """
CREATE TABLE bans (
    user_id    TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    until      DOUBLE PRECISION,            -- epoch seconds; NULL: permanent
    created_at DOUBLE PRECISION NOT NULL,
    created_by TEXT
);
CREATE TABLE mutes (
    user_id    TEXT PRIMARY KEY,
    until      DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    created_by TEXT
);
"""),)


class PostgresModerationStore(postgres.Component):
    """Bans and mutes in the PostgreSQL database the instances share."""

    component = "moderation"
    migrations = MIGRATIONS


    async def active_bans(self, now: float) -> dict[str, Ban]:
        pool = self.writes.pool
        await pool.execute("DELETE FROM bans WHERE until IS NOT NULL AND until <= $1", now)
        rows = await pool.fetch("SELECT user_id, reason, until, created_at, created_by "
                                "FROM bans")
        return {row[0]: Ban(*row) for row in rows}

    async def active_mutes(self, now: float) -> dict[str, Mute]:
        pool = self.writes.pool
        await pool.execute("DELETE FROM mutes WHERE until <= $1", now)
        rows = await pool.fetch("SELECT user_id, until, created_at, created_by FROM mutes")
        return {row[0]: Mute(*row) for row in rows}

    def put_ban(self, ban: Ban) -> None:
        self.writes.write(
            "INSERT INTO bans (user_id, reason, until, created_at, created_by) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET reason = $2, "
            "until = $3, created_at = $4, created_by = $5",
            ban.user_id, ban.reason, ban.until, ban.created_at, ban.created_by)

    def delete_ban(self, user_id: str) -> None:
        self.writes.write("DELETE FROM bans WHERE user_id = $1", user_id)

    def put_mute(self, mute: Mute) -> None:
        self.writes.write(
            "INSERT INTO mutes (user_id, until, created_at, created_by) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET until = $2, "
            "created_at = $3, created_by = $4",
            mute.user_id, mute.until, mute.created_at, mute.created_by)

    def delete_mute(self, user_id: str) -> None:
        self.writes.write("DELETE FROM mutes WHERE user_id = $1", user_id)
