"""Opening the SQLite files of stateful services, the same way everywhere."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_database(path: str, schema: str) -> sqlite3.Connection:
    """An autocommit connection to ``path`` (``:memory:`` too) in WAL mode, with ``schema``
    applied (idempotent ``CREATE ... IF NOT EXISTS`` statements).

    WAL lets readers (a backup, a second connection in a test) read while the service writes;
    ``synchronous=NORMAL`` is durable across application crashes in WAL mode, only an OS crash
    may lose the last transactions. Autocommit: callers open transactions themselves where a
    write has several steps (the room store's group commit).
    """
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=2000")
    db.executescript(schema)
    return db
