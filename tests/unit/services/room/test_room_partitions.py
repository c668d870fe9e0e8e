"""Rooms partitioned by room id and presence by user id over two room-service instances.

Each instance runs its real dispatch with its own SQLite file; requests go where a gateway
sends them: the real :class:`~switchboard.gateway.routing.RoutingTable` built from the
instances' own descriptions picks the instance, cluster-wide reads ask both and are merged
by the gateway's real :func:`~switchboard.gateway.gather.gathered`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_room_service import FakeClock, room_config, session

from switchboard.gateway.gather import gathered
from switchboard.gateway.routing import RoutingTable
from switchboard.services.room import RoomService
from switchboard.shared.envelope import (
    PubKind,
    Recovery,
    Reply,
    RequestKind,
    Session,
    SocketState,
)
from switchboard.shared.partitions import Membership
from switchboard.shared.publisher import MemoryPublisher
from switchboard.shared.testing import ServiceHarness

NAMES = ("room-0", "room-1")
GROUP = Membership.of(NAMES)


def owned_by(name: str, prefix: str) -> Iterator[str]:
    """Keys ``<prefix><n>`` that ``name`` owns, in order."""
    return (f"{prefix}{n}" for n in range(1000) if GROUP.owner(f"{prefix}{n}") == name)


class Cluster:
    """Two instances and the routing a gateway does in front of them."""

    def __init__(self, tmp_path: Path, store: dict[str, str] | None = None) -> None:
        self.clock = FakeClock()
        self.pubs = {name: MemoryPublisher(name) for name in NAMES}
        self.services = {
            name: RoomService(self.pubs[name], room_config(
                tmp_path / f"{name}.sqlite3", **(store or {}), room_instance=name,
                room_instances=NAMES), self.clock)
            for name in NAMES}
        self.h = {name: ServiceHarness(s) for name, s in self.services.items()}
        self.routing = RoutingTable(s.info() for s in self.services.values())

    async def start(self) -> Cluster:
        """Every instance opened and started, as the runner has it (its RESYNC forgotten)."""
        for name, service in self.services.items():
            await service.open()
            await service.start()
            self.pubs[name].published.clear()
        return self

    async def connect(self, s: Session) -> Reply:
        (stage,) = self.routing.connect_stages(s.ns)
        return await self.h[stage.pick(s, [])].connect(s)

    async def event(self, s: Session, event: str, *args: Any,
                    down: tuple[str, ...] = ()) -> Reply:
        owner = self.routing.owner(s.ns, event)
        assert owner is not None, event
        if owner.gathered:
            replies = {name: await self.h[name].event(s, event, *args)
                       for name in owner.members if name not in down}
            return gathered(replies, down)
        target = owner.pick(s, list(args))
        reply = await self.h[target].event(s, event, *args)
        if reply.session is not None:  # as the gateway does: the others hear of it
            for name in owner.members:
                if name != target:
                    await self.h[name].request(RequestKind.UPDATE, session=reply.session,
                                               event=event, gateway=s.gateway)
        return reply

    async def ok(self, s: Session, event: str, *args: Any) -> dict[str, Any]:
        reply = await self.event(s, event, *args)
        assert reply.ok and reply.ack is not None, reply.error
        ack: dict[str, Any] = reply.ack[0]
        return ack

    async def disconnect(self, s: Session) -> None:
        for name in self.routing.disconnect_listeners(s.ns):
            await self.h[name].disconnect(s)

    def emitted(self, event: str) -> list[tuple[str, list[Any]]]:
        """(instance, args) of every ``event`` published, by instance."""
        return [(name, p.args) for name, pub in self.pubs.items() for _, p in pub.published
                if p.kind == PubKind.EMIT and p.event == event]

    def clear(self) -> None:
        for pub in self.pubs.values():
            pub.published.clear()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = await Cluster(tmp_path).start()
    yield c
    for service in c.services.values():
        await service.stop()


def user(name: str, n: int, gateway: str = "gw1") -> Session:
    """Socket ``n`` of a user whose presence instance is ``name``."""
    uid = next(u for i, u in enumerate(owned_by(name, "user-")) if i == n)
    return session(n, user=uid, gateway=gateway, username=f"name-{n}")


async def test_each_room_lives_on_the_instance_its_id_hashes_to(cluster: Cluster) -> None:
    a, b = next(owned_by("room-0", "lobby-")), next(owned_by("room-1", "lobby-"))
    alice = user("room-0", 0)
    assert (await cluster.connect(alice)).ok
    for room in (a, b):
        await cluster.ok(alice, "create room", {"roomId": room, "roomName": room})
        assert (await cluster.event(alice, "join room", room)).ok
    assert set(cluster.services["room-0"].rooms) == {a}
    assert set(cluster.services["room-1"].rooms) == {b}
    cluster.clear()
    for room in (a, b):
        await cluster.ok(alice, "chat message", {"content": f"hi {room}", "roomId": room})
    # Each room's messages are numbered and saved by its owner only.
    assert sorted((name, args[0]["roomId"]) for name, args in cluster.emitted("chat message")) \
        == [("room-0", a), ("room-1", b)]
    history = await cluster.ok(alice, "get history", {"roomId": b})
    assert [m["content"] for m in history["messages"]] == [f"hi {b}"]
    # Fencing: an instance refuses what another owns (a gateway with another view).
    wrong = await cluster.h["room-0"].event(alice, "join room", b)
    assert (wrong.ok, wrong.error) == (False, "service unavailable")


async def test_presence_is_told_once_by_the_users_instance(cluster: Cluster) -> None:
    alice, bob = user("room-0", 0), user("room-1", 1)
    for s in (alice, bob):
        assert (await cluster.connect(s)).ok
    online = cluster.emitted("user online")
    assert [(name, args[0]["userId"]) for name, args in online] == [
        ("room-0", alice.user_id), ("room-1", bob.user_id)]
    room = next(owned_by("room-1", "lobby-"))
    await cluster.ok(bob, "create room", {"roomId": room, "roomName": room})
    for s in (alice, bob):
        assert (await cluster.event(s, "join room", room)).ok
    cluster.clear()
    await cluster.disconnect(alice)  # every instance hears it; each does its part
    assert [(n, a[0]["userId"]) for n, a in cluster.emitted("user offline")] == [
        ("room-0", alice.user_id)]
    assert [(n, a[0]["userCount"]) for n, a in cluster.emitted("user left")] == [("room-1", 1)]


async def test_a_private_message_goes_to_the_recipients_instance(cluster: Cluster) -> None:
    alice, bob = user("room-0", 0), user("room-1", 1)
    for s in (alice, bob):
        assert (await cluster.connect(s)).ok
    ack = await cluster.ok(alice, "private message", {"to": bob.user_id, "content": "psst"})
    assert ack["success"] is True
    assert [name for name, _ in cluster.emitted("private message")] == ["room-1"]
    await cluster.disconnect(bob)
    gone = await cluster.event(alice, "private message", {"to": bob.user_id, "content": "?"})
    assert (gone.ok, gone.error) == (False, "user not online")


async def test_cluster_wide_reads_gather_every_instance_or_say_what_is_missing(
        cluster: Cluster) -> None:
    alice, bob = user("room-0", 0), user("room-1", 1)
    for s in (alice, bob):
        assert (await cluster.connect(s)).ok
    for s in (alice, bob):
        await cluster.h["room-0"].heartbeat(s.gateway)
        await cluster.h["room-1"].heartbeat(s.gateway)
    rooms = [next(owned_by("room-0", "r-")), next(owned_by("room-1", "r-"))]
    for room in rooms:
        await cluster.ok(alice, "create room", {"roomId": room, "roomName": room})
    users = await cluster.ok(alice, "get online users")
    assert sorted(u["id"] for u in users["users"]) == sorted([str(alice.user_id), str(bob.user_id)])
    assert "partial" not in users
    listing = await cluster.ok(bob, "get rooms")
    assert sorted(r["id"] for r in listing["rooms"]) == sorted(rooms)
    admin = replace(alice, ns="/admin", sid="gw1.admin")
    assert (await cluster.connect(admin)).ok
    stats = await cluster.ok(admin, "get stats")
    assert (stats["totalConnections"], stats["mainConnections"]) == (3, 2)
    assert stats["namespaces"] == {"/": 2, "/admin": 1}
    assert [g["id"] for g in stats["gateways"]] == ["gw1"]  # told by both, listed once
    # One instance down: the answer comes, and says whose part it lacks.
    partial = await cluster.event(alice, "get online users", down=("room-1",))
    assert partial.ack is not None
    assert partial.ack[0]["partial"] is True and partial.ack[0]["missing"] == ["room-1"]
    assert [u["id"] for u in partial.ack[0]["users"]] == [alice.user_id]
    unacked = await cluster.event(alice, "get rooms", down=("room-0",))
    (room_list,) = [e for e in unacked.emits if e.event == "room list"]
    assert room_list.args[0]["missing"] == ["room-0"]


async def test_a_new_name_reaches_the_rooms_on_other_instances(cluster: Cluster) -> None:
    alice = user("room-0", 0)
    assert (await cluster.connect(alice)).ok
    room = next(owned_by("room-1", "lobby-"))
    await cluster.ok(alice, "create room", {"roomId": room, "roomName": room})
    assert (await cluster.event(alice, "join room", room)).ok
    reply = await cluster.event(alice, "set username", "Alice!")
    assert reply.ok and reply.session is not None
    info = await cluster.event(reply.session, "get room info", room)
    assert info.ack is not None
    assert [u["username"] for u in info.ack[0]["users"]] == ["Alice!"]


async def test_each_instance_keeps_its_own_share_of_a_sync(cluster: Cluster) -> None:
    alice, bob = user("room-0", 0), user("room-1", 1)
    room = next(owned_by("room-1", "lobby-"))
    await cluster.h["room-1"].sync("gw1", ())
    await cluster.ok(alice, "create room", {"roomId": room, "roomName": room})
    states = [SocketState(alice, (room,)), SocketState(bob, ())]
    for name in cluster.routing.sync_listeners():
        await cluster.h[name].request(RequestKind.SYNC, gateway="gw1", sockets=tuple(states))
    r0, r1 = cluster.services["room-0"], cluster.services["room-1"]
    assert [e.sid for e in r0.registry.all()] == [alice.sid]
    assert [e.sid for e in r1.registry.all()] == [bob.sid]
    assert r1.membership.is_member(room, alice.sid) and not r0.membership.sids()
    # The gateway lost: each drops what it held, presence told by the users' instances.
    cluster.clear()
    await r0.gateway_lost("gw1")
    await r1.gateway_lost("gw1")
    assert sorted(n for n, _ in cluster.emitted("user offline")) == ["room-0", "room-1"]
    assert not r1.membership.sids()


async def test_a_transport_update_with_an_older_session_keeps_the_new_name(
        cluster: Cluster) -> None:
    alice = user("room-0", 0)
    assert (await cluster.connect(alice)).ok
    room = next(owned_by("room-1", "lobby-"))
    await cluster.ok(alice, "create room", {"roomId": room, "roomName": room})
    assert (await cluster.event(alice, "join room", {"roomId": room})).ok
    renamed = await cluster.event(alice, "set username", "Alice!")
    assert renamed.session is not None
    # The upgrade's UPDATE was built from the session before the rename was applied.
    await cluster.h["room-1"].update(replace(alice, transport="websocket"))
    bob = user("room-1", 1)  # another member asks: alice's own requests would mend it
    assert (await cluster.connect(bob)).ok
    assert (await cluster.event(bob, "join room", {"roomId": room})).ok
    info = await cluster.event(bob, "get room info", room)
    assert info.ack is not None
    assert [u["username"] for u in info.ack[0]["users"]] == ["Alice!", "name-1"]


async def test_oldest_first_holds_across_instances(cluster: Cluster) -> None:
    # Connected in turn, alternating instances: the merged list keeps connection order.
    sockets = [user(NAMES[n % 2], n) for n in range(4)]
    for s in sockets:
        assert (await cluster.connect(s)).ok
    users = await cluster.ok(sockets[0], "get online users")
    assert [u["socketId"] for u in users["users"]] == [s.sid for s in sockets]
    assert all("_order" not in u for u in users["users"])
    rooms = [next(owned_by(NAMES[n % 2], f"r{n}-")) for n in range(4)]
    for room in rooms:
        await cluster.ok(sockets[0], "create room", {"roomId": room, "roomName": room})
        cluster.clock.advance(1)
    listing = await cluster.ok(sockets[0], "get rooms")
    assert [r["id"] for r in listing["rooms"]] == rooms


async def test_a_restored_socket_taken_out_meanwhile_is_announced_back(
        cluster: Cluster) -> None:
    alice, bob = user("room-0", 0), user("room-1", 1)
    for s in (alice, bob):
        assert (await cluster.connect(s)).ok
    room = next(owned_by("room-1", "lobby-"))
    await cluster.ok(bob, "create room", {"roomId": room, "roomName": room})
    for s in (alice, bob):
        assert (await cluster.event(s, "join room", {"roomId": room})).ok
    await cluster.h["room-1"].disconnect(alice)  # the old connection's news came first
    cluster.clear()
    moved = replace(alice, gateway="gw2")
    await cluster.h["room-1"].request(RequestKind.CONNECTED, session=moved, gateway="gw2",
                                      recovery=Recovery.CHECK,
                                      sockets=(SocketState(moved, (room,)),))
    assert [(n, a[0]["socketId"]) for n, a in cluster.emitted("user joined")] == [
        ("room-1", alice.sid)]
    assert cluster.services["room-1"].membership.is_member(room, alice.sid)


async def test_an_instance_ignores_rooms_its_store_keeps_that_another_owns(
        tmp_path: Path, store: dict[str, str]) -> None:
    """A file kept from an earlier member list, or the database every instance shares."""
    from switchboard.services.room.model import Room
    from switchboard.services.room.store import open_store
    from switchboard.shared.store import SQLITE, StoreConfig

    mine, theirs = next(owned_by("room-0", "r-")), next(owned_by("room-1", "r-"))
    kept = open_store(StoreConfig(store.get("store", SQLITE)), str(tmp_path / "room-0.sqlite3"))
    await kept.open()
    for room_id in (mine, theirs):
        kept.insert_room(Room(room_id, room_id, False, None, 10, 0, "u"))
    await kept.committed()
    await kept.close()
    c = await Cluster(tmp_path, store).start()
    try:
        assert set(c.services["room-0"].rooms) == {mine}
    finally:
        for service in c.services.values():
            await service.stop()
