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

from tests.support.cluster import Cluster, metric, start_chat_cluster
from tests.support.peer import UserPeer
from tests.support.polling import poll_until
from tests.support.steady import Steady

RATE = 100.0
KILLS = 3
#: How long anything may take to arrive once the broker is back.
DELIVERY_BOUND = 20.0
ROOM = "steady"


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

        steady = Steady(sender, [ROOM], RATE)
        down: list[tuple[float, float]] = []  # (killed, restarted) of each outage
        steady.start()
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
        await steady.more_acked(50, "traffic after the last outage", DELIVERY_BOUND)
        await steady.finish()

        # Not vacuous: traffic flowed, and some of it was acked while no broker was there.
        acked = steady.acked_at
        assert len(acked) >= 300, (len(acked), steady.failed[:5])
        during = [n for n, at in acked.items() if any(a <= at <= b for a, b in down)]
        assert during, "no message was acked during an outage"
        await steady.arrived(members, DELIVERY_BOUND)
        # The recovery was the replay, not luck: the gateways asked for and got one.
        answered = sum(metric(cluster.url(i), "switchboard_gateway_replays_total",
                              outcome="answered") for i in range(2))
        assert answered >= KILLS, answered
        print(f"\n{len(acked)} acked ({len(during)} while the broker was down), "
              f"{len(steady.failed)} failed, {KILLS} broker kills: 0 lost, 0 duplicated "
              f"on {len(members)} members")
    finally:
        for peer in peers:
            await peer.close()
        cluster.stop()
