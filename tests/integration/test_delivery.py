"""Nothing acknowledged is lost across a broker crash (docs/delivery.md).

The whole application as separate processes (two gateways, clients on their default
options), a sender emitting acked room messages at a steady 100 per second, and the broker
killed with SIGKILL at random moments and started again. The room service acks while no
broker is there to take its publications; the gateways notice the gap by the publisher's
beats and fetch what they missed over request/reply. Every message the sender got a success
ack for must reach every member, each exactly once, in the order sent.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from tests.support.cluster import Cluster, metric, start_chat_cluster
from tests.support.peer import UserPeer
from tests.support.polling import poll_until

RATE = 100.0
KILLS = 3
#: How long anything may take to arrive once the broker is back.
DELIVERY_BOUND = 20.0
ROOM = "steady"


def contents(peer: UserPeer) -> list[int]:
    """The numbers of the room messages ``peer`` received, in arrival order."""
    return [int(item.data["content"][1:]) for item in peer.log
            if item.event == "chat message" and isinstance(item.data, dict)
            and item.data.get("roomId") == ROOM]


def broker_instances(cluster: Cluster) -> list[str | None]:
    return [cluster.stats(i)["brokers"][0]["instance"]
            for i in range(len(cluster.gateway_ports))]


async def new_broker_seen_by_all(cluster: Cluster, old: list[str | None]) -> None:
    await poll_until(lambda: asyncio.to_thread(broker_instances, cluster),
                     lambda now: all(a != b for a, b in zip(now, old, strict=True)),
                     "every gateway hears the new broker", DELIVERY_BOUND,
                     retry_on=(OSError, KeyError))


async def test_acked_messages_reach_every_member_once_across_broker_kills(
    tmp_path: Path,
) -> None:
    # A steady sender well above the per-user chat rate limit: the limit is off here.
    cluster = start_chat_cluster(tmp_path, gateways=2, moderation_args=(
        "--event-limit", "0", "--user-event-limit", "0"))
    peers: list[UserPeer] = []
    try:
        sender = await UserPeer("sender").connect(cluster.url(0))
        members = [await UserPeer(f"member{i}").connect(cluster.url(i % 2)) for i in range(4)]
        peers = [sender, *members]
        ack = await sender.call("create room", {"roomId": ROOM, "roomName": "Steady"})
        assert ack["success"] is True, ack
        for peer in peers:
            assert (await peer.call("join room", {"roomId": ROOM}))["success"] is True

        acked: dict[int, float] = {}  # message number -> when its success ack came
        failed: list[Any] = []
        down: list[tuple[float, float]] = []  # (killed, restarted) of each outage
        stop = asyncio.Event()

        async def one(n: int) -> None:
            try:
                reply = await sender.call("chat message", {"roomId": ROOM, "content": f"#{n}"},
                                          timeout=5.0)
            except Exception as exc:  # a timeout or a dropped call: not acked, not counted
                failed.append(exc)
                return
            if isinstance(reply, dict) and reply.get("success") is True:
                acked[n] = time.monotonic()
            else:
                failed.append(reply)

        async def send() -> None:
            loop = asyncio.get_running_loop()
            tasks: set[asyncio.Task[None]] = set()
            due, n = loop.time(), 0
            while not stop.is_set() and n < 10_000:
                n += 1
                task = asyncio.create_task(one(n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                due += 1 / RATE
                await asyncio.sleep(max(0.0, due - loop.time()))
            if tasks:
                await asyncio.wait(tasks, timeout=10)

        sending = asyncio.create_task(send())
        rng = random.Random(15)
        for _ in range(KILLS):
            # The fault schedule: a random moment of steady traffic, then a random outage.
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            old = await asyncio.to_thread(broker_instances, cluster)
            cluster.parts["broker"].kill()
            killed = time.monotonic()
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            cluster.start_broker()
            down.append((killed, time.monotonic()))
            await new_broker_seen_by_all(cluster, old)
        await asyncio.sleep(0.5)  # traffic after the last outage too
        stop.set()
        await asyncio.wait_for(sending, 30)

        # Not vacuous: traffic flowed, and some of it was acked while no broker was there.
        assert len(acked) >= 300, (len(acked), failed[:5])
        during = [n for n, at in acked.items() if any(a <= at <= b for a, b in down)]
        assert during, "no message was acked during an outage"
        expected = sorted(acked)
        for member in members:
            await poll_until(lambda m=member: asyncio.sleep(0, set(contents(m))),  # type: ignore[misc]
                             lambda got: set(expected) <= got,
                             f"every acked message at {member.name}", DELIVERY_BOUND)
        for member in members:
            got = contents(member)
            assert len(got) == len(set(got)), f"{member.name}: duplicates delivered"
            assert got == sorted(got), f"{member.name}: out of order"
            assert not member.disconnects["/"].is_set(), f"{member.name} was disconnected"
        # The recovery was the replay, not luck: the gateways asked for and got one.
        answered = sum(metric(cluster.url(i), "switchboard_gateway_replays_total",
                              outcome="answered") for i in range(2))
        assert answered >= KILLS, answered
        print(f"\n{len(acked)} acked ({len(during)} while the broker was down), "
              f"{len(failed)} failed, {KILLS} broker kills: 0 lost, 0 duplicated "
              f"on {len(members)} members")
    finally:
        for peer in peers:
            await peer.close()
        cluster.stop()
