"""``switchboard.emitter``: a plain Python process (not a client, not a service) emits to a
room whose members sit on two gateways, to one user's sockets, to a namespace, with
exclusions and binary; and ``switchboard emit`` does the same from the command line.

Each emitter runs in a process of its own (``python -c``), as a web view or a cron job
would. "Did not arrive" is proved with a marker: a later emit on the same path to the same
client that does arrive.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.chat_helpers import ChatClient, Clients, unique
from tests.support.balancer import balanced
from tests.support.cluster import Cluster, start_chat_cluster
from tests.support.ports import free_port

RUN_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two gateways behind HAProxy (no stickiness); clients on their default options."""
    workdir = Path(tmp_path_factory.mktemp("emitter"))
    cluster = start_chat_cluster(workdir, gateways=2)
    with balanced(cluster, workdir):
        yield cluster


def run_python(code: str) -> None:
    """Run ``code`` in a fresh interpreter; it must exit 0."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "switchboard", "emit", *args],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)


async def in_room(room: str, *members: ChatClient) -> None:
    """The first member creates ``room``; all join it."""
    ack = await members[0].call("create room", {"roomId": room, "roomName": room})
    assert ack == {"success": True, "roomId": room}
    for client in members:
        ack = await client.call("join room", {"roomId": room})
        assert ack == {"success": True, "roomId": room}
        await client.next("room joined")


async def assert_nothing_before_marker(client: ChatClient, event: str) -> None:
    """The marker emitted to ``client`` after ``event`` arrived, and ``event`` did not."""
    await client.next("marker")
    extra = [item.args for item in client.drain(event)]
    assert extra == [], f"{client.name} got {event}: {extra}"


async def marker(cluster: Cluster, *clients: ChatClient) -> None:
    await asyncio.to_thread(run_python, f"""
        from switchboard.emitter import Emitter
        with Emitter({cluster.broker_pub!r}) as io:
            for user in {[c.user_id for c in clients]!r}:
                io.to_user(user).emit("marker")
    """)


async def test_a_plain_process_emits_to_a_room_across_gateways_and_to_one_user(
        cluster: Cluster) -> None:
    room = unique("emitted")
    async with Clients(cluster) as clients:
        alice = await clients.user_on(0, unique("alice"))
        bob = await clients.user_on(1, unique("bob"))
        carol = await clients.user_on(1, unique("carol"))  # on bob's gateway, not in the room
        dave0 = await clients.user_on(0, unique("dave"))
        dave1 = await clients.user_on(1, dave0.user_id or "")  # the same user, second tab
        await in_room(room, alice, bob)
        assert alice.gateway != bob.gateway

        await asyncio.to_thread(run_python, f"""
            from switchboard.emitter import Emitter
            with Emitter({cluster.broker_pub!r}) as io:
                io.to({room!r}).emit("notice", {{"text": "build 7 is green"}}, b"\\x00\\xff")
                io.to_user({dave0.user_id!r}).emit("notice", "for dave only")
        """)
        for member in (alice, bob):
            got = await member.receive("notice")
            assert got.args == ({"text": "build 7 is green"}, b"\x00\xff")
        for tab in (dave0, dave1):
            assert await tab.next("notice") == "for dave only"
        await marker(cluster, carol, alice, dave0, dave1)
        for client in (carol, alice, dave0, dave1):
            await assert_nothing_before_marker(client, "notice")


async def test_exclusions_namespaces_and_the_async_emitter(cluster: Cluster) -> None:
    room = unique("emitted")
    async with Clients(cluster) as clients:
        alice = await clients.user_on(0, unique("alice"), namespaces=("/", "/chat"))
        bob = await clients.user_on(1, unique("bob"), namespaces=("/", "/chat"))
        await in_room(room, alice, bob)
        await asyncio.to_thread(run_python, f"""
            import asyncio
            from switchboard.emitter import AsyncEmitter

            async def main():
                async with AsyncEmitter({cluster.broker_pub!r}) as io:
                    await io.to({room!r}).except_({alice.sid_of("/")!r}).emit("notice", 1)
                    await io.of("/chat").emit("notice", 2)   # the whole namespace
                    await io.to_socket({alice.sid_of("/")!r}).emit("notice", 3)
            asyncio.run(main())
        """)
        assert await bob.next("notice") == 1
        assert await alice.next("notice") == 3  # the room's emit left alice out
        for client in (alice, bob):
            assert await client.next("notice", ns="/chat") == 2
        await marker(cluster, alice, bob)
        for client in (alice, bob):
            await assert_nothing_before_marker(client, "notice")


async def test_switchboard_emit_from_the_command_line(cluster: Cluster) -> None:
    room = unique("emitted")
    async with Clients(cluster) as clients:
        alice = await clients.user_on(0, unique("alice"))
        bob = await clients.user_on(1, unique("bob"))
        await in_room(room, alice, bob)
        done = await asyncio.to_thread(run_cli, "--broker-pub", cluster.broker_pub,
                                       "--room", room, "deploy", '{"version": "1.2.3"}', "42")
        assert done.returncode == 0, done.stderr
        for member in (alice, bob):
            assert (await member.receive("deploy")).args == ({"version": "1.2.3"}, 42)


@pytest.mark.parametrize(("args", "error"), [
    (["--room", "r", "notice", "{not json"], "not JSON: {not json"),
    (["--room", "r", "--user", "u", "notice"], "give one target, not room and user"),
    (["--room", "r", "connect"], "'connect' is reserved by Socket.IO clients"),
    (["--socket", "nodot", "notice"], "not a switchboard socket id: 'nodot'"),
])
def test_switchboard_emit_says_what_is_wrong(args: list[str], error: str,
                                             cluster: Cluster) -> None:
    done = run_cli("--broker-pub", cluster.broker_pub, *args)
    assert done.returncode != 0
    assert error in done.stderr, done.stderr


def test_without_a_broker_the_emitter_says_so_in_bounded_time(free_endpoint: Any) -> None:
    done = run_cli("--broker-pub", free_endpoint, "--ready-timeout", "0.5", "notice")
    assert done.returncode == 1
    assert f"no broker at {free_endpoint} within 0.5 s" in done.stderr, done.stderr


@pytest.fixture
def free_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
