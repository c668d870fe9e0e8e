"""The PostgreSQL store through real processes: ``switchboard up --store`` puts every room
instance and moderation in one database; a store URL that names nothing real stops a
service at start with exit 2 and says why. (Every chat contract row runs on PostgreSQL in
the balancer variant of ``chat_cluster``; a kill -9 of room and moderation on both stores in
``test_restart.py``.) ``up --room-spares`` grows and shrinks the room service live."""

from __future__ import annotations

import asyncio
import signal
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


async def test_up_adds_a_spare_room_instance_live_and_removes_it(
        tmp_path: Path, postgres: PostgresServer) -> None:
    """``up --room-spares 1``: kill -USR1 starts the spare, which takes the rooms it owns
    from the running instance, live; kill -USR2 stops it, and it hands them back. A room
    that moves both ways numbers its messages on (``seq``) through both moves."""
    from switchboard.shared.tokens import issue_token

    url = postgres.fresh_url()
    both = Membership.of(("room-0", "room-1"))
    room = next(f"spare-{n}" for n in range(100) if both.owner(f"spare-{n}") == "room-1")
    with running_up(tmp_path, "--jwt-secret", JWT_SECRET, "--room-spares", "1",
                    "--store", url) as up:
        assert "room-1" not in up.children()  # configured, not started
        client = socketio.AsyncClient(reconnection=False)
        await asyncio.wait_for(client.connect(up.url, auth={"token": issue_token(
            JWT_SECRET, "u1", "ann")}), WAIT)
        numbers: list[int] = []

        async def say(line: str) -> None:
            """Until acked (a move refuses a room's events for a moment)."""
            deadline = asyncio.get_running_loop().time() + 3 * WAIT
            while True:
                ack = await client.call("chat message", {"content": line, "roomId": room},
                                        timeout=WAIT)
                if ack.get("success"):
                    break
                assert ack == {"success": False, "error": "service unavailable"}, ack
                assert asyncio.get_running_loop().time() < deadline, f"{line!r} not acked"
                await asyncio.sleep(0.1)
            history = await client.call("get history", {"roomId": room}, timeout=WAIT)
            numbers[:] = [m["seq"] for m in history["messages"]]

        try:
            assert (await client.call("create room", {"roomId": room, "roomName": room},
                                      timeout=WAIT))["success"]
            assert (await client.call("join room", {"roomId": room}, timeout=WAIT))["success"]
            await say("on room-0")
            up.process.send_signal(signal.SIGUSR1)
            await up.wait_output(r"room-1 added \(pid \d+\)")
            await up.wait_output(r"room-1\s+\| .*room-1 now owns 1 rooms")
            assert "room-1" in up.children()
            await say("on room-1")
            up.process.send_signal(signal.SIGUSR2)
            await up.wait_output(r"room-1 removed \(exit 0\)")
            assert "lease of room-1 given back" in up.output()
            assert "room-1" not in up.children()
            await say("on room-0 again")
            assert numbers == [1, 2, 3]
            up.process.send_signal(signal.SIGUSR2)  # nothing to remove: said, and ignored
            await up.wait_output("SIGUSR2: no spare room instance is running")
        finally:
            await asyncio.wait_for(client.disconnect(), WAIT)
    assert "room-1 restarted" not in up.output()  # removed, not restarted
