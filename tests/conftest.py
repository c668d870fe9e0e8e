"""Fixtures every suite may use: the real PostgreSQL server, and the store under test."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer

#: The stores a persistence test runs on: every one the services offer (``--store``).
STORES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, started when a test first asks for it.

    Its directory is outside pytest's (``/tmp/pytest-of-<user>`` is private to that user,
    and the server runs as ``postgres`` when the tests run as root)."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="switchboard-pg-")))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> dict[str, str]:
    """The config fields naming the store under test: none for SQLite (the default, a file
    per test under ``tmp_path``), ``store=<URL>`` of a fresh schema for PostgreSQL."""
    if request.param == "sqlite":
        return {}
    server: PostgresServer = request.getfixturevalue("postgres")
    return {"store": server.fresh_url()}
