"""PostgreSQL for the stateful services: a bounded pool, versioned migrations applied at
start, and group commit.

**asyncpg**, not psycopg 3: the services are asyncio programs that write small rows at high
rates. asyncpg speaks the binary protocol natively, prepares and caches every statement it
runs on a connection (``statement_cache_size``, so the hot INSERT is parsed once per
connection), and sends ``executemany`` as one pipelined batch. psycopg 3 is excellent and
more general (sync and async, COPY helpers, libpq); its async path goes through libpq, and
we need none of what it adds.

**Migrations without a tool.** Each store lists its schema as numbered SQL steps
(:data:`Migration`); :func:`connect` applies those the database lacks, in order, in one
transaction holding an advisory lock, so instances starting together never race, and
records them in ``switchboard_migrations`` (component, version). A database newer than
this code (a rollback after an upgrade) stops the instance at start rather than running
old code on a schema it does not know. Alembic would bring SQLAlchemy for some ten lines
of SQL per service; yoyo-migrations brings a synchronous driver.

**Group commit** (:class:`GroupCommit`): writes are queued in order and a single task
commits everything queued since the last commit in one transaction (``executemany`` per
run of one statement), so under load one commit (one WAL flush) covers many messages, and
the store is not the ceiling. A caller that must not acknowledge before its write is
durable awaits :meth:`GroupCommit.committed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg

from switchboard.shared.checks import redacted
from switchboard.shared.errors import ConfigError, Fenced
from switchboard.shared.store import StoreConfig

log = logging.getLogger("switchboard.store")

#: A schema step: its version (1, 2, ... per component) and its SQL.
Migration = tuple[int, str]
#: A statement and its arguments, as :meth:`GroupCommit.write` takes them.
Statement = tuple[str, tuple[Any, ...]]


class Guard(Protocol):
    """What a :class:`GroupCommit`'s writes are fenced by."""

    def stamp(self) -> object:
        """What a write is made under, taken when it is queued."""

    def check(self, stamps: list[object]) -> Statement:
        """Raise :class:`Fenced` if a write's stamp no longer holds; else the query the
        store must answer with a row for the batch to commit."""

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS switchboard_migrations (
    component  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)
"""
#: The SQLSTATE a store-side fence raises (a guard's deferred trigger refusing a COMMIT).
FENCED_SQLSTATE = "SB001"
#: One lock for every component's migrations (pg_advisory_xact_lock's key).
_MIGRATION_LOCK = 0x5B0A4D


async def connect(config: StoreConfig, component: str,
                  migrations: Sequence[Migration]) -> asyncpg.Pool:
    """A pool on ``config.store`` with ``component``'s schema up to date.

    Raises :class:`ConfigError` (exit 2) when the URL names nothing that answers within
    ``store_timeout``: a host that refuses, a wrong password, a database that does not
    exist, or a schema newer than this code.
    """
    where = redacted(config.store)
    deadline = time.monotonic() + config.store_timeout
    while True:
        try:
            pool = await asyncpg.create_pool(
                config.store,
                min_size=1,
                max_size=config.store_pool_size,
                timeout=config.store_timeout,
                command_timeout=config.store_timeout,
                # Idle connections are closed, so a quiet instance holds one connection.
                max_inactive_connection_lifetime=60.0,
            )
            break
        except (TimeoutError, OSError) as exc:
            # Refused or unreachable: the server may be starting with us (compose, a pod).
            if time.monotonic() >= deadline:
                raise ConfigError(f"--store {where}: cannot connect within "
                                  f"{config.store_timeout:g} s ({exc})") from None
            await asyncio.sleep(0.2)
        except asyncpg.PostgresError as exc:
            raise ConfigError(f"--store {where}: {exc}") from None
    try:
        await _migrate(pool, component, migrations)
    except BaseException:
        await pool.close()
        raise
    return pool


async def _migrate(pool: asyncpg.Pool, component: str,
                   migrations: Sequence[Migration]) -> None:
    known = max((version for version, _ in migrations), default=0)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(_MIGRATIONS_TABLE)
        applied = {row[0] for row in await conn.fetch(
            "SELECT version FROM switchboard_migrations WHERE component = $1", component)}
        newer = {v for v in applied if v > known}
        if newer:
            raise ConfigError(f"the {component} schema in the store is at version "
                              f"{max(newer)}, newer than this switchboard knows ({known}): "
                              "run the version that migrated it")
        for version, sql in sorted(migrations):
            if version in applied:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO switchboard_migrations (component, version) "
                               "VALUES ($1, $2)", component, version)
            log.info("store: %s schema migrated to version %d", component, version)


class GroupCommit:
    """Writes to one pool, committed in order, many per transaction.

    The one owner of the pending writes: :meth:`write` queues a statement; a single task
    commits each batch in one transaction while the next one fills. A failed batch fails
    every caller waiting on it (their senders get ``internal error``), is logged, and is not
    retried: its writes are lost, and the next batch goes on.

    ``guard`` (fencing, ``services/room/leases.py``): each write is stamped when it is
    queued (:meth:`Guard.stamp`); at commit time the guard judges the batch's stamps
    (:meth:`Guard.check`: raises :class:`Fenced` if any was made under what no longer
    holds) and names a query asked first in the batch's transaction. When that query
    returns no row, the batch is rolled back and fails with :class:`Fenced` too.
    """

    def __init__(self, pool: asyncpg.Pool, name: str, guard: Guard | None = None) -> None:
        self.pool = pool
        self.name = name
        self.guard = guard
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._stamps: list[object] = []
        #: The outcome of the batch filling now, and of the one being committed.
        self._filling: asyncio.Future[None] | None = None
        self._committing: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        #: Batches and statements committed: what the store bench divides by.
        self.batches = 0
        self.statements = 0

    def write(self, sql: str, *args: Any) -> None:
        """Queue one statement; it commits with the next batch."""
        loop = asyncio.get_running_loop()
        self._pending.append((sql, args))
        if self.guard is not None:
            self._stamps.append(self.guard.stamp())
        if self._filling is None:
            self._filling = loop.create_future()
            # Nobody may await a background write (a room deleted when it emptied): its
            # failure is logged here rather than by asyncio as "never retrieved".
            self._filling.add_done_callback(_retrieve)
        if self._task is None:
            self._task = loop.create_task(self._run())

    async def committed(self) -> None:
        """Return once every write queued so far is committed (raises if it failed)."""
        future = self._filling or self._committing
        if future is not None:
            await asyncio.shield(future)

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                stamps, self._stamps = self._stamps, []
                future, self._filling = self._filling, None
                assert future is not None
                self._committing = future
                try:
                    await self._commit(batch, stamps)
                except Fenced as exc:
                    log.warning("store %s: %d writes refused: %s", self.name, len(batch),
                                exc.reason)
                    future.set_exception(exc)
                except Exception as exc:
                    log.error("store %s: a commit of %d writes failed: %s", self.name,
                              len(batch), exc)
                    future.set_exception(exc)
                else:
                    self.batches += 1
                    self.statements += len(batch)
                    future.set_result(None)
                finally:
                    if self._committing is future:
                        self._committing = None
        finally:
            self._task = None

    async def _commit(self, batch: list[tuple[str, tuple[Any, ...]]],
                      stamps: list[object]) -> None:
        runs: list[tuple[str, list[tuple[Any, ...]]]] = []
        for statement, args in batch:
            if not runs or runs[-1][0] != statement:
                runs.append((statement, []))
            runs[-1][1].append(args)
        async with self.pool.acquire() as conn:
            if len(runs) == 1 and self.guard is None:
                # One statement (the usual batch: chat messages): executemany is atomic on
                # its own, one round trip instead of three with BEGIN and COMMIT.
                await conn.executemany(*runs[0])
                return
            try:
                async with conn.transaction():
                    if self.guard is not None:
                        sql, args = self.guard.check(stamps)
                        if await conn.fetchval(sql, *args) is None:
                            raise Fenced(f"{self.name}: the store says the lease is not ours")
                    for sql, rows in runs:
                        await conn.executemany(sql, rows)
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == FENCED_SQLSTATE:  # the guard's trigger, at COMMIT
                    raise Fenced(f"{self.name}: {exc}") from None
                raise

    async def close(self, timeout: float) -> None:
        """Commit what is queued (within ``timeout``), then close the pool."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
        await self.pool.close()


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class Component:
    """A service's part of the database: its pool and group commit, opened with its
    migrations applied, closed after the queued writes committed. The stores of the room
    and moderation services are such parts."""

    #: The component's name (``switchboard_migrations.component``) and schema steps.
    component = ""
    migrations: Sequence[Migration] = ()

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self._writes: GroupCommit | None = None

    @property
    def writes(self) -> GroupCommit:
        if self._writes is None:
            raise RuntimeError(f"the {self.component} store is not open")
        return self._writes

    async def open(self) -> None:
        if self._writes is None:
            pool = await connect(self.config, self.component, self.migrations)
            self._writes = GroupCommit(pool, self.component)

    async def close(self) -> None:
        if self._writes is not None:
            await self._writes.close(self.config.store_timeout)
            self._writes = None

    async def committed(self) -> None:
        await self.writes.committed()
