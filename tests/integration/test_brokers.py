"""Publications spread over two brokers by topic (docs/partitions.md, "Several brokers"):
real processes, two gateways behind HAProxy (round robin, no stickiness), python-socketio
and the official Node client on their default options through the balancer only.

Room ids and user ids are chosen by the same hashing every part uses, so that each case puts
its topics on the broker it needs: rooms on both brokers, a private message whose recipient's
topic lives on the other broker from the sender's, and each broker killed (SIGKILL) under a
steady 100 acked messages/s while the room on the other broker carries on. Every message the
sender got a success ack for must reach every member once, in the order sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchboard.shared import topics
from tests.integration.chat_helpers import Clients, unique
from tests.support.balancer import balancer
from tests.support.cluster import Cluster, metric, start_chat_cluster, token
from tests.support.peer import UserPeer
from tests.support.polling import poll_until

pytestmark = pytest.mark.timeout(240)

BROKERS = 2
RATE = 100.0
#: How long anything may take to arrive once a broker is back.
DELIVERY_BOUND = 20.0


def on(k: int, prefix: str, ns: str = "/", user: bool = False) -> str:
    """A fresh room id (or, ``user``, user id: its ``user:<id>`` room) living on broker k."""
    while True:
        key = unique(prefix)
        room = topics.user_room(key) if user else key
        if topics.broker_of(topics.room(ns, room), BROKERS) == k:
            return key


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = Path(tmp_path_factory.mktemp("brokers"))
    # A steady sender well above the per-user chat rate limit: the limit is off here.
    cluster = start_chat_cluster(workdir, gateways=2, brokers=BROKERS, moderation_args=(
        "--event-limit", "0", "--user-event-limit", "0"))
    try:
        with balancer(workdir, cluster.gateway_ports) as url:
            cluster.balancer_url, cluster.balanced = url, 2
            yield cluster
    finally:
        cluster.stop()


async def test_rooms_on_both_brokers_and_a_private_message_across(cluster: Cluster) -> None:
    for i in range(2):
        brokers = cluster.stats(i)["brokers"]
        assert len(brokers) == BROKERS and all(b["up"] and b["instance"] for b in brokers)
    async with Clients(cluster) as clients:
        alice_id, bob_id = on(0, "alice", user=True), on(1, "bob", user=True)
        alice = await clients.user(0, alice_id)
        bob = await clients.user(1, bob_id)
        rooms = [on(0, "lobby"), on(1, "lobby")]
        for room in rooms:
            created = await alice.call("create room", {"roomId": room, "roomName": room})
            assert created == {"success": True, "roomId": room}
            for client in (alice, bob):
                assert (await client.call("join room", {"roomId": room}))["success"] is True
        for n, room in enumerate(rooms):
            ack = await alice.call("chat message", {"content": f"line {n}", "roomId": room})
            assert ack["success"] is True
        lines = [await bob.next("chat message") for _ in rooms]
        assert sorted(m["roomId"] for m in lines) == sorted(rooms)
        # Alice's user topic lives on broker 0, Bob's on broker 1: both ways across.
        for sender, recipient, recipient_id in ((alice, bob, bob_id), (bob, alice, alice_id)):
            ack = await sender.call("private message", {"to": recipient_id, "content": "psst"})
            assert ack["success"] is True, ack
            message = await recipient.next("private message")
            assert message["content"] == "psst"


def test_node_clients_on_their_defaults_with_two_brokers(cluster: Cluster) -> None:
    """The official Node client, default options (polling, then the upgrade), through the
    balancer: its users' topics on different brokers, their room on broker 1."""
    from tests.support.node import find_node, run_flow

    node = find_node("Node brokers test")
    alice_id, bob_id = on(0, "n-alice", user=True), on(1, "n-bob", user=True)
    room = on(1, "node-lobby")
    flow = {
        "a": {"url": cluster.client_url(0), "token": token(alice_id, "alice"),
              "userId": alice_id},
        "b": {"url": cluster.client_url(1), "token": token(bob_id, "bob"), "userId": bob_id},
        "transports": None,
        "roomId": room,
        "roomName": "Node lobby",
        "chat": "héllo over two brokers",
        "private": "just between us",
    }
    r = run_flow(node, flow)
    assert r["transports"] == {"a": "websocket", "b": "websocket"}
    assert r["userOnline"] == {"userId": bob_id, "username": "bob"}
    assert r["joinB"]["roomJoined"]["userCount"] == 2
    assert r["chat"]["received"]["content"] == flow["chat"]
    assert r["chat"]["received"]["roomId"] == room
    assert r["private"]["received"]["from"] == bob_id
    assert r["private"]["received"]["content"] == flow["private"]


def contents(peer: UserPeer, room: str) -> list[int]:
    """The numbers of ``room``'s messages ``peer`` received, in arrival order."""
    return [int(item.data["content"][1:]) for item in peer.log
            if item.event == "chat message" and isinstance(item.data, dict)
            and item.data.get("roomId") == room]


def broker_instances(cluster: Cluster, k: int) -> list[str | None]:
    return [cluster.stats(i)["brokers"][k]["instance"] for i in range(2)]


async def test_a_broker_kill_pauses_only_its_topics_and_loses_nothing_acked(
        cluster: Cluster) -> None:
    rooms = [on(0, "steady"), on(1, "steady")]
    sender = await UserPeer(unique("sender")).connect(cluster.client_url(0))
    members = [await UserPeer(unique(f"member{i}")).connect(cluster.client_url(i % 2))
               for i in range(4)]
    peers = [sender, *members]
    try:
        for room in rooms:
            ack = await sender.call("create room", {"roomId": room, "roomName": room})
            assert ack["success"] is True, ack
            for peer in peers:
                assert (await peer.call("join room", {"roomId": room}))["success"] is True
        acked: dict[int, str] = {}  # message number -> its room
        failed: list[Any] = []
        stop = asyncio.Event()

        async def one(n: int, room: str) -> None:
            try:
                reply = await sender.call("chat message", {"roomId": room, "content": f"#{n}"},
                                          timeout=5.0)
            except Exception as exc:  # a timeout or a dropped call: not acked, not counted
                failed.append(exc)
                return
            if isinstance(reply, dict) and reply.get("success") is True:
                acked[n] = room
            else:
                failed.append(reply)

        counter = {"n": 0}

        async def send() -> None:
            loop = asyncio.get_running_loop()
            tasks: set[asyncio.Task[None]] = set()
            due = loop.time()
            while not stop.is_set() and counter["n"] < 10_000:
                counter["n"] += 1
                n = counter["n"]
                task = asyncio.create_task(one(n, rooms[n % 2]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                due += 1 / RATE
                await asyncio.sleep(max(0.0, due - loop.time()))
            if tasks:
                await asyncio.wait(tasks, timeout=10)

        async def more_acked(what: str) -> None:
            before = len(acked)
            await poll_until(lambda: asyncio.sleep(0, len(acked)),
                             lambda count: count >= before + 50, what, DELIVERY_BOUND)

        async def delivered_after(room: str, after: int) -> list[int]:
            return await poll_until(
                lambda: asyncio.sleep(0, [max(contents(m, room), default=0) for m in members]),
                lambda latest: all(n > after for n in latest),
                f"{room} delivering while the other broker is down", DELIVERY_BOUND)

        async def new_broker_heard(k: int, old: list[str | None]) -> None:
            await poll_until(lambda: asyncio.to_thread(broker_instances, cluster, k),
                             lambda now: all(a != b for a, b in zip(now, old, strict=True)),
                             f"every gateway hears the new broker {k}", DELIVERY_BOUND,
                             retry_on=(OSError, KeyError))

        async def all_arrived(member: UserPeer, room: str, expected: list[int]) -> None:
            await poll_until(lambda: asyncio.sleep(0, set(contents(member, room))),
                             lambda got: set(expected) <= got,
                             f"every acked message of {room} at {member.name}", DELIVERY_BOUND)

        sending = asyncio.create_task(send())
        carried_on = []
        for victim in (1, 0):
            await more_acked("steady traffic before the kill")
            old = await asyncio.to_thread(broker_instances, cluster, victim)
            cluster.parts[cluster.broker_name(victim)].kill()
            at_kill = counter["n"]
            other = rooms[1 - victim]
            # While broker `victim` is down, the room on the other broker carries on: a
            # message sent after the kill reaches every member before the restart.
            got = await delivered_after(other, at_kill)
            carried_on.append(min(got) - at_kill)
            cluster.start_broker(victim)
            await new_broker_heard(victim, old)
        await more_acked("traffic after the last restart")
        stop.set()
        await asyncio.wait_for(sending, 30)

        assert len(acked) >= 300, (len(acked), failed[:5])
        for room in rooms:
            expected = sorted(n for n, r in acked.items() if r == room)
            assert expected, room
            for member in members:
                await all_arrived(member, room, expected)
                got = contents(member, room)
                assert len(got) == len(set(got)), f"{member.name}: duplicates delivered"
                assert got == sorted(got), f"{member.name}: out of order in {room}"
        for member in members:
            assert not member.disconnects["/"].is_set(), f"{member.name} was disconnected"
        # Each kill was healed by a replay of the paths through that broker.
        answered = sum(metric(cluster.url(i), "switchboard_gateway_replays_total",
                              outcome="answered") for i in range(2))
        assert answered >= 2, answered
        print(f"\n{len(acked)} acked, {len(failed)} failed, a kill of each broker: 0 lost, "
              f"0 duplicated on {len(members)} members; the other broker's room delivered "
              f"within {carried_on} messages of each kill")
    finally:
        for peer in peers:
            await peer.close()
