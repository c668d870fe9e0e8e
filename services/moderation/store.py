"""Bans and mutes in SQLite, so they survive a moderation restart.

One small file (WAL journal: readers never block the writer, and a crash loses nothing that
was committed). Writes are rare (an administrator's action) and tiny, so they run inline on
the event loop; reads happen once, at start, after which the service answers from memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.shared.sqlite import open_database

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


class ModerationStore:
    """The SQLite file behind bans and mutes (``:memory:`` works too, for throwaway use)."""

    def __init__(self, path: str) -> None:
        # Every statement is its own transaction: there are no multi-step writes.
        self.db = open_database(path, SCHEMA)

    def active_bans(self, now: float) -> dict[str, Ban]:
        """Bans still in force (ended ones are deleted on the way)."""
        self.db.execute("DELETE FROM bans WHERE until IS NOT NULL AND until <= ?", (now,))
        rows = self.db.execute(
            "SELECT user_id, reason, until, created_at, created_by FROM bans"
        ).fetchall()
        return {row[0]: Ban(*row) for row in rows}

    def active_mutes(self, now: float) -> dict[str, Mute]:
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

    def close(self) -> None:
        self.db.close()
