"""The PostgreSQL store through real processes: ``switchboard up --store`` puts every room
instance and moderation in one database; a store URL that names nothing real stops a
service at start with exit 2 and says why. (Every chat contract row runs on PostgreSQL in
the balancer variant of ``chat_cluster``; a kill -9 of room and moderation on both stores in
``test_restart.py``.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import socketio

from switchboard.services.room.store import MIGRATIONS as ROOM_MIGRATIONS
from switchboard.shared.partitions import Membership
from tests.support.cluster import JWT_SECRET
from tests.support.ports import free_port_block
from tests.support.postgres import PostgresServer
from tests.support.upserver import running_up

WAIT = 10.0


async def _chat(url: str, user: str, room: str, lines: list[str]) -> dict[str, Any]:
    """``user`` creates ``room``, says ``lines``, and reads the history back."""
    from switchboard.shared.tokens import issue_token

    client = socketio.AsyncClient(reconnection=False)
    try:
        await asyncio.wait_for(client.connect(url, auth={"token": issue_token(
            JWT_SECRET, user, user)}), WAIT)
        created = await client.call("create room", {"roomId": room, "roomName": room},
                                    timeout=WAIT)
        assert created == {"success": True, "roomId": room}, created
        assert (await client.call("join room", {"roomId": room}, timeout=WAIT))["success"]
        for line in lines:
            ack = await client.call("chat message", {"content": line, "roomId": room},
                                    timeout=WAIT)
            assert ack["success"] is True, ack
        history: dict[str, Any] = await client.call("get history", {"roomId": room},
                                                    timeout=WAIT)
        return history
    finally:
        await asyncio.wait_for(client.disconnect(), WAIT)


async def test_up_keeps_every_instance_in_one_postgresql_database(
        tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.fresh_url()
    schema = postgres.schema_of(url)
    # One room on each instance: both write the one database.
    group = Membership.of(("room-0", "room-1"))
    rooms = [next(f"pg-{n}" for n in range(100) if group.owner(f"pg-{n}") == name)
             for name in ("room-0", "room-1")]
    with running_up(tmp_path, "--jwt-secret", JWT_SECRET, "--room-shards", "2",
                    "--store", url) as up:
        for n, room in enumerate(rooms):
            history = await _chat(up.url, f"u{n}", room, [f"{room} one", f"{room} two"])
            assert [m["content"] for m in history["messages"]] == [
                f"{room} one", f"{room} two"], history
    stored = postgres.psql(f"SELECT room, content FROM {schema}.messages ORDER BY seq")
    assert stored.splitlines() == [f"{room}|{room} {word}" for room in rooms
                                   for word in ("one", "two")]
    assert postgres.psql(f"SELECT id FROM {schema}.rooms ORDER BY id").splitlines() == sorted(
        rooms)
    assert postgres.psql(f"SELECT component, version FROM {schema}.switchboard_migrations "
                         "ORDER BY component, version").splitlines() == [
        "moderation|1", *(f"room|{version}" for version, _ in ROOM_MIGRATIONS)]
    assert not list((tmp_path / "data").glob("*.sqlite3"))


@pytest.mark.parametrize("service", ["room", "moderation"])
def test_a_store_naming_nothing_real_stops_the_service_with_exit_2(
        service: str, postgres: PostgresServer) -> None:
    bind = f"tcp://127.0.0.1:{free_port_block(1)}"
    nobody = free_port_block(1)
    # No broker: a service opens its store before it waits for one.
    for store, says in [
        (postgres.url("no_such_db"), 'database "no_such_db" does not exist'),
        (f"postgresql://chat:s3cret@127.0.0.1:{nobody}/chat",
         f"--store postgresql://chat:***@127.0.0.1:{nobody}/chat: cannot connect "
         "within 1 s"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "switchboard", "service", service, "--bind", bind,
             "--store-timeout", "1", "--broker-pub", f"tcp://127.0.0.1:{nobody}"],
            env={"SWITCHBOARD_STORE": store, "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert says in done.stderr, done.stderr
        assert "s3cret" not in done.stderr
