"""Fail-over of a room instance with the PostgreSQL store (``services/room/leases.py``):
real processes, two room instances sharing one database, two gateways behind HAProxy (no
stickiness), python-socketio clients on their default options through the balancer only.

Under a steady 100 acked messages/s over two rooms, one on each instance:
- **kill -9, not restarted**: the survivor takes the dead instance's room and its users
  within 10 s; nothing acknowledged is lost, duplicated or reordered; seats and presence
  are right afterwards;
- **SIGSTOP, then SIGCONT**: the survivor takes over while the instance is frozen; woken,
  the frozen instance finds its lease lapsed and writes nothing under it, rejoins, and gets
  its room back once the survivor let go; again nothing acknowledged is lost or reordered.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchboard.shared.partitions import Membership
from tests.integration.chat_helpers import unique
from tests.support.balancer import balancer
from tests.support.cluster import Cluster, http_get, metric, start_chat_cluster
from tests.support.peer import UserPeer
from tests.support.polling import poll_until
from tests.support.postgres import PostgresServer
from tests.support.steady import Steady

pytestmark = pytest.mark.timeout(300)

INSTANCES = ("room-0", "room-1")
RATE = 100.0
#: The issue's bound: a surviving instance serves the dead one's rooms within this.
TAKEOVER_BOUND = 10.0
DELIVERY_BOUND = 20.0
#: How long a moved room may take to be acked again, at most (the bound is checked apart).
MOVE_BOUND = TAKEOVER_BOUND + 5
GROUP = Membership.of(INSTANCES)


def owned_by(instance: str, prefix: str) -> str:
    while True:
        key = unique(prefix)
        if GROUP.owner(key) == instance:
            return key


@pytest.fixture
def cluster(tmp_path: Path, postgres: PostgresServer) -> Iterator[Cluster]:
    # A steady sender well above the per-user chat rate limit: the limit is off here.
    cluster = start_chat_cluster(tmp_path, gateways=2, room_instances=2,
                                 store=postgres.fresh_url(), moderation_args=(
                                     "--event-limit", "0", "--user-event-limit", "0"))
    try:
        with balancer(tmp_path, cluster.gateway_ports) as url:
            cluster.balancer_url, cluster.balanced = url, 2
            yield cluster
    finally:
        cluster.stop()


async def joined(peers: list[UserPeer], rooms: list[str]) -> None:
    for room in rooms:
        ack = await peers[0].call("create room", {"roomId": room, "roomName": room})
        assert ack["success"] is True, ack
        for peer in peers:
            assert (await peer.call("join room", {"roomId": room}))["success"] is True


async def check_seats_and_presence(peers: list[UserPeer], rooms: list[str]) -> None:
    """Every room has every member's seat, and every user is online, once settled."""
    async def settled() -> tuple[list[int], set[str], bool]:
        counts = []
        for room in rooms:
            info = await peers[0].call("get room info", {"roomId": room})
            counts.append(info["userCount"] if isinstance(info, dict) else -1)
        online = await peers[0].call("get online users")
        users = {u["id"] for u in online.get("users", [])}
        return counts, users, bool(online.get("partial"))

    expected_users = {p.name for p in peers}
    await poll_until(settled, lambda r: r[0] == [len(peers)] * len(rooms)
                     and r[1] >= expected_users and not r[2],
                     "seats and presence right after the move", DELIVERY_BOUND,
                     retry_on=(asyncio.TimeoutError, OSError))


async def test_a_killed_instance_that_does_not_come_back_is_taken_over(
        cluster: Cluster) -> None:
    rooms = [owned_by("room-0", "kept"), owned_by("room-1", "moved")]
    users = [owned_by("room-1", "u"), owned_by("room-0", "u")]  # presence on both
    sender = await UserPeer(users[0]).connect(cluster.client_url(0))
    members = [await UserPeer(owned_by(INSTANCES[i % 2], "m")).connect(cluster.client_url(i % 2))
               for i in range(4)]
    other = await UserPeer(users[1]).connect(cluster.client_url(1))
    peers = [sender, *members, other]
    steady = Steady(sender, rooms, RATE)
    try:
        await joined(peers, rooms)
        steady.start()
        await steady.more_acked(100, "steady traffic before the kill", DELIVERY_BOUND)
        cluster.parts["room-1"].kill()  # and it is not started again
        killed = time.monotonic()
        taken = await steady.acked_in(
            rooms[1], killed, "room-1's room acked by room-0", MOVE_BOUND)
        took = taken - killed
        assert took < TAKEOVER_BOUND, f"taken over in {took:.1f} s"
        await steady.more_acked(100, "traffic after the takeover", DELIVERY_BOUND)
        await steady.finish()
        assert len(steady.acked) >= 300, (len(steady.acked), steady.failed[:5])
        await steady.arrived(members, DELIVERY_BOUND)
        await check_seats_and_presence(peers, rooms)
        # The gateways stay ready: room-1 is no live member, the others serve its share.
        await poll_until(lambda: asyncio.to_thread(healthy, cluster),
                         lambda codes: codes == [200, 200], "gateways healthy without room-1",
                         DELIVERY_BOUND)
        print(f"\n{len(steady.acked)} acked, {len(steady.failed)} failed; room-1 killed, "
              f"its room acked by room-0 {took:.2f} s later; 0 lost, 0 duplicated, in order")
    finally:
        for peer in peers:
            await peer.close()


async def test_a_frozen_instance_is_taken_over_fenced_and_given_its_rooms_back(
        cluster: Cluster) -> None:
    rooms = [owned_by("room-0", "kept"), owned_by("room-1", "frozen")]
    sender = await UserPeer(owned_by("room-0", "u")).connect(cluster.client_url(0))
    members = [await UserPeer(owned_by(INSTANCES[i % 2], "m")).connect(cluster.client_url(i % 2))
               for i in range(4)]
    peers = [sender, *members]
    steady = Steady(sender, rooms, RATE)
    frozen = cluster.parts["room-1"]
    try:
        await joined(peers, rooms)
        steady.start()
        await steady.more_acked(100, "steady traffic before the freeze", DELIVERY_BOUND)
        frozen.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            taken = await steady.acked_in(
                rooms[1], stopped, "room-1's room acked by room-0", MOVE_BOUND)
            took = taken - stopped
            assert took < TAKEOVER_BOUND, f"taken over in {took:.1f} s"
            await steady.more_acked(100, "traffic while room-1 is frozen", DELIVERY_BOUND)
        finally:
            frozen.signal(signal.SIGCONT)
        woken = time.monotonic()
        # Woken, it finds its lease lapsed, rejoins, and its room comes back to it.
        await poll_until(lambda: asyncio.sleep(0, frozen.output()),
                         lambda out: "had lapsed" in out and "now owns" in out.split(
                             "had lapsed")[-1], "room-1 rejoining after its lapse",
                         DELIVERY_BOUND)
        await steady.acked_in(
            rooms[1], woken + 3.0, "room-1's room acked after the return", MOVE_BOUND)
        await steady.more_acked(100, "traffic after the return", DELIVERY_BOUND)
        await steady.finish()
        assert len(steady.acked) >= 300, (len(steady.acked), steady.failed[:5])
        await steady.arrived(members, DELIVERY_BOUND)
        await check_seats_and_presence(peers, rooms)
        print(f"\n{len(steady.acked)} acked, {len(steady.failed)} failed; room-1 frozen, "
              f"its room acked by room-0 {took:.2f} s later, and back after SIGCONT; "
              "0 lost, 0 duplicated, in order")
    finally:
        frozen.signal(signal.SIGCONT)
        for peer in peers:
            await peer.close()


@pytest.fixture
def growing(tmp_path: Path, postgres: PostgresServer) -> Iterator[Cluster]:
    """Three room instances configured, two started: every part knows room-2's endpoint."""
    cluster = start_chat_cluster(tmp_path, gateways=2, room_instances=3, rooms_started=2,
                                 store=postgres.fresh_url(), moderation_args=(
                                     "--event-limit", "0", "--user-event-limit", "0"))
    try:
        with balancer(tmp_path, cluster.gateway_ports) as url:
            cluster.balancer_url, cluster.balanced = url, 2
            yield cluster
    finally:
        cluster.stop()


def healthy(cluster: Cluster) -> list[int]:
    return [http_get(f"{cluster.url(i)}/health")[0] for i in range(2)]


async def test_an_added_instance_takes_its_rooms_and_a_removed_one_gives_them_back(
        growing: Cluster) -> None:
    """A live move both ways: room-2 started under load takes the rooms it outweighs the
    others for, from a live owner that lets them go first; then stopped gracefully
    (SIGTERM) and not restarted, it hands them back at once."""
    cluster = growing
    three = Membership.of(("room-0", "room-1", "room-2"))
    # A room that moves to room-2 when it joins, and one that stays where it is.
    moving = next(key for key in (unique("moving") for _ in range(1000))
                  if three.owner(key) == "room-2")
    staying = next(key for key in (unique("staying") for _ in range(1000))
                   if three.owner(key) == GROUP.owner(key))
    rooms = [staying, moving]
    # The gateways are healthy without room-2: it is configured, not a live member.
    assert healthy(cluster) == [200, 200]
    sender = await UserPeer(owned_by("room-0", "u")).connect(cluster.client_url(0))
    members = [await UserPeer(unique("m")).connect(cluster.client_url(i % 2))
               for i in range(4)]
    peers = [sender, *members]
    steady = Steady(sender, rooms, RATE)
    try:
        await joined(peers, rooms)
        steady.start()
        await steady.more_acked(100, "steady traffic before room-2 starts", DELIVERY_BOUND)
        added = cluster.start_room("room-2")
        started = time.monotonic()
        await poll_until(lambda: asyncio.sleep(0, added.output()),
                         lambda out: "service room-2 ready" in out, "room-2 ready",
                         DELIVERY_BOUND)
        await steady.acked_in(
            moving, time.monotonic(), "the moved room acked after the move", MOVE_BOUND)
        await poll_until(lambda: asyncio.to_thread(room_events, cluster, "room-2"),
                         lambda count: count > 0, "gateways sending room-2 its rooms' events",
                         DELIVERY_BOUND)
        await poll_until(lambda: asyncio.to_thread(room_members, cluster),
                         lambda seen: seen == [["room-0", "room-1", "room-2"]] * 2,
                         "both gateways' /stats showing room-2 a member", DELIVERY_BOUND)
        await steady.more_acked(100, "traffic after the addition", DELIVERY_BOUND)
        await check_seats_and_presence(peers, rooms)
        moved_in = time.monotonic() - started
        served = await asyncio.to_thread(room_events, cluster, "room-2")

        assert added.stop() == 0  # SIGTERM: removed gracefully, and not started again
        removed = time.monotonic()
        # It handed its rooms over (--room-handover, the default): they did not wait for
        # its lease to lapse.
        assert "lease of room-2 given back" in added.output(), added.output()[-2000:]
        await steady.acked_in(
            moving, removed, "the room acked again after room-2 left", MOVE_BOUND)
        back_in = time.monotonic() - removed
        assert back_in < TAKEOVER_BOUND, f"its rooms back in {back_in:.1f} s"
        await poll_until(lambda: asyncio.to_thread(room_members, cluster),
                         lambda seen: seen == [["room-0", "room-1"]] * 2,
                         "both gateways' /stats without room-2", DELIVERY_BOUND)
        await steady.more_acked(100, "traffic after the removal", DELIVERY_BOUND)
        await steady.finish()
        assert len(steady.acked) >= 300, (len(steady.acked), steady.failed[:5])
        await steady.arrived(members, DELIVERY_BOUND)
        await check_seats_and_presence(peers, rooms)
        await poll_until(lambda: asyncio.to_thread(healthy, cluster),
                         lambda codes: codes == [200, 200], "gateways healthy without room-2",
                         DELIVERY_BOUND)
        print(f"\n{len(steady.acked)} acked, {len(steady.failed)} failed; room-2 added "
              f"({served:.0f} events served by it, settled {moved_in:.2f} s after its start) "
              "and removed "
              f"(its room acked elsewhere {back_in:.2f} s later); 0 lost, 0 duplicated, "
              "in order")
    finally:
        for peer in peers:
            await peer.close()


def room_members(cluster: Cluster) -> list[list[str]]:
    """The room service's live instances, as each gateway's ``/stats`` has them."""
    return [cluster.stats(i)["groups"]["room"]["members"] for i in range(2)]


def room_events(cluster: Cluster, name: str) -> float:
    return sum(metric(cluster.url(i), "switchboard_gateway_request_seconds_count",
                      service=name, kind="event") for i in range(2))
