"""Rooms and presence partitioned over two room instances, each a real process with its own
SQLite file; two gateways behind HAProxy (round robin, no stickiness); python-socketio and
the official Node client on their default options (polling, then the upgrade) through the
balancer only.

Room ids and user ids are chosen by the same hashing the gateways use, so that each case
puts what it needs on the partition it needs: a user in rooms of both partitions, a private
message from one user's partition to the other's, the cluster-wide reads, and one partition
frozen (SIGSTOP: its reads come back partial, its rooms wait, the other's carry on) or
killed and restarted in place (its rooms back from its file, its members from the gateways).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.shared.partitions import Membership
from tests.integration.chat_helpers import Clients, unique
from tests.support.balancer import balancer
from tests.support.cluster import Cluster, start_chat_cluster
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(180)

NAMES = ("room-0", "room-1")
GROUP = Membership.of(NAMES)


def on(name: str, prefix: str) -> str:
    """A fresh id (room or user) that partition ``name`` owns."""
    while True:
        key = unique(prefix)
        if GROUP.owner(key) == name:
            return key


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = Path(tmp_path_factory.mktemp("partitions"))
    cluster = start_chat_cluster(workdir, gateways=2, room_instances=2,
                                 gateway_args=("--request-timeout", "2"))
    try:
        with balancer(workdir, cluster.gateway_ports) as url:
            cluster.balancer_url, cluster.balanced = url, 2
            yield cluster
    finally:
        cluster.stop()


async def test_a_user_in_rooms_of_both_partitions_and_a_private_message_across(
        cluster: Cluster) -> None:
    async with Clients(cluster) as clients:
        alice_id, bob_id = on("room-0", "alice"), on("room-1", "bob")
        alice = await clients.user(0, alice_id)
        bob = await clients.user(1, bob_id)
        rooms = [on("room-0", "lobby"), on("room-1", "lobby")]
        for room in rooms:
            created = await alice.call("create room", {"roomId": room, "roomName": room,
                                                       "isPrivate": False})
            assert created == {"success": True, "roomId": room}
            for client in (alice, bob):
                joined = await client.call("join room", {"roomId": room})
                assert joined["success"] is True, joined
        for n, room in enumerate(rooms):
            ack = await alice.call("chat message", {"content": f"line {n}", "roomId": room})
            assert ack["success"] is True
        lines = [await bob.next("chat message") for _ in rooms]
        assert sorted(m["roomId"] for m in lines) == sorted(rooms)
        assert {m["from"] for m in lines} == {alice_id}
        # The recipient's partition says whether it is online, and delivers.
        ack = await alice.call("private message", {"to": bob_id, "content": "psst"})
        assert ack["success"] is True, ack
        message = await bob.next("private message")
        assert (message["from"], message["content"]) == (alice_id, "psst")
        gone = await alice.call("private message", {"to": on("room-1", "nobody"),
                                                    "content": "?"})
        assert gone == {"success": False, "error": "user not online"}
        # Cluster-wide reads gather both partitions.
        users = await alice.call("get online users")
        assert {alice_id, bob_id} <= {u["id"] for u in users["users"]}
        assert "partial" not in users
        listing = await bob.call("get rooms")
        listed = {r["id"]: r["userCount"] for r in listing["rooms"]}
        assert all(listed.get(room) == 2 for room in rooms), listing
        info = await bob.call("get room info", rooms[1])
        assert sorted(u["id"] for u in info["users"]) == sorted([alice_id, bob_id])


async def test_a_frozen_partition_pauses_only_its_rooms_and_reads_say_partial(
        cluster: Cluster) -> None:
    async with Clients(cluster) as clients:
        alice_id = on("room-0", "alice")
        alice = await clients.user(0, alice_id)
        bob = await clients.user(1, on("room-0", "bob"))
        mine, theirs = on("room-0", "lobby"), on("room-1", "lobby")
        for room in (mine, theirs):
            await alice.call("create room", {"roomId": room, "roomName": room,
                                             "isPrivate": False})
            for client in (alice, bob):
                assert (await client.call("join room", room))["success"] is True
        frozen = cluster.parts["room-1"]
        frozen.signal(signal.SIGSTOP)
        try:
            users = await alice.call("get online users")
            assert users["partial"] is True and users["missing"] == ["room-1"], users
            assert alice_id in {u["id"] for u in users["users"]}
            # The other partition's rooms carry on; the frozen one's fail cleanly.
            ack = await alice.call("chat message", {"content": "still here", "roomId": mine})
            assert ack["success"] is True
            line = await bob.wait_for("chat message", lambda m: m["content"] == "still here")
            assert line["roomId"] == mine
            paused = await alice.call("chat message", {"content": "later", "roomId": theirs})
            assert paused == {"success": False, "error": "service unavailable"}
        finally:
            frozen.signal(signal.SIGCONT)
        ack = await poll_until(
            lambda: alice.call("chat message", {"content": "back", "roomId": theirs}),
            lambda a: a.get("success") is True, "room-1 serving again", timeout=15,
            max_interval=0.8)
        assert ack["success"] is True
        line = await bob.wait_for("chat message", lambda m: m["content"] == "back")
        assert line["roomId"] == theirs
        users = await alice.call("get online users")
        assert "partial" not in users


async def test_a_killed_partition_restarted_in_place_has_its_rooms_and_members_back(
        cluster: Cluster) -> None:
    async with Clients(cluster) as clients:
        alice = await clients.user(0, on("room-0", "alice"))
        bob = await clients.user(1, on("room-1", "bob"))
        room = on("room-1", "lobby")
        await alice.call("create room", {"roomId": room, "roomName": room, "isPrivate": False})
        for client in (alice, bob):
            assert (await client.call("join room", room))["success"] is True
        old = cluster.parts["room-1"]
        old.kill()
        # In place, as a supervisor restarts it: the same command, endpoint and file.
        again = cluster.start_service("room", *old.argv[old.argv.index("--broker-pub") + 2:],
                                      env=old.env, instance="room-1")
        assert again.argv == old.argv
        # The room from its file, its members from the gateways' SYNC: seats as before.
        info = await poll_until(lambda: alice.call("get room info", room),
                                lambda i: isinstance(i, dict) and i.get("userCount") == 2,
                                "room-1 back with both members", timeout=20, max_interval=0.8)
        assert info["userCount"] == 2
        ack = await alice.call("chat message", {"content": "after", "roomId": room})
        assert ack["success"] is True
        line = await bob.wait_for("chat message", lambda m: m["content"] == "after")
        assert line["roomId"] == room


def test_node_clients_on_their_defaults_across_partitions(cluster: Cluster) -> None:
    """The official Node client, default options (polling, then the upgrade), through the
    balancer: its users on different partitions, their room on the other one's."""
    from tests.support.cluster import token
    from tests.support.node import find_node, run_flow

    node = find_node("Node partitions test")
    alice_id, bob_id = on("room-0", "n-alice"), on("room-1", "n-bob")
    room = on("room-1", "node-lobby")
    flow = {
        "a": {"url": cluster.client_url(0), "token": token(alice_id, "alice"),
              "userId": alice_id},
        "b": {"url": cluster.client_url(1), "token": token(bob_id, "bob"), "userId": bob_id},
        "transports": None,
        "roomId": room,
        "roomName": "Node lobby",
        "chat": "héllo across partitions",
        "private": "just between us",
    }
    r = run_flow(node, flow)
    assert r["transports"] == {"a": "websocket", "b": "websocket"}
    a_id, b_id = r["a"]["id"], r["b"]["id"]
    assert r["userOnline"] == {"userId": bob_id, "username": "bob"}
    alice = {"id": alice_id, "username": "alice", "socketId": a_id}
    bob = {"id": bob_id, "username": "bob", "socketId": b_id}
    assert r["joinB"]["roomJoined"] == {"roomId": room, "roomName": "Node lobby",
                                        "userCount": 2, "users": [alice, bob]}
    assert r["chat"]["received"]["content"] == flow["chat"]
    assert r["chat"]["received"]["roomId"] == room
    assert r["private"]["received"]["from"] == bob_id
    assert r["private"]["received"]["content"] == flow["private"]
