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

import pytest

from switchboard.shared import topics
from tests.integration.chat_helpers import Clients, unique
from tests.support.balancer import balancer
from tests.support.cluster import Cluster, metric, start_chat_cluster, token
from tests.support.peer import UserPeer
from tests.support.polling import poll_until
from tests.support.steady import Steady, contents

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
        steady = Steady(sender, rooms, RATE)
        acked = steady.acked

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

        steady.start()
        carried_on = []
        for victim in (1, 0):
            await steady.more_acked(50, "steady traffic before the kill", DELIVERY_BOUND)
            old = await asyncio.to_thread(broker_instances, cluster, victim)
            cluster.parts[cluster.broker_name(victim)].kill()
            at_kill = steady.n
            other = rooms[1 - victim]
            # While broker `victim` is down, the room on the other broker carries on: a
            # message sent after the kill reaches every member before the restart.
            got = await delivered_after(other, at_kill)
            carried_on.append(min(got) - at_kill)
            cluster.start_broker(victim)
            await new_broker_heard(victim, old)
        await steady.more_acked(150, "traffic after the last restart", DELIVERY_BOUND)
        await steady.finish()

        assert len(acked) >= 300, (len(acked), steady.failed[:5])
        await steady.arrived(members, DELIVERY_BOUND)
        # Each kill was healed by a replay of the paths through that broker.
        answered = sum(metric(cluster.url(i), "switchboard_gateway_replays_total",
                              outcome="answered") for i in range(2))
        assert answered >= 2, answered
        print(f"\n{len(acked)} acked, {len(steady.failed)} failed, a kill of each broker: 0 lost, "
              f"0 duplicated on {len(members)} members; the other broker's room delivered "
              f"within {carried_on} messages of each kill")
    finally:
        for peer in peers:
            await peer.close()
