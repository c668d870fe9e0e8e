"""The room service behind real ZeroMQ sockets: a broker thread, the runner, fake gateways.

What travels the wire here: CONNECT/EVENT/SYNC requests and replies (with nested sessions and
socket states), and publications on the topics the gateways subscribe to. Every wait is
bounded (FakeGateway's timeouts); nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from switchboard.services.room import Config, RoomService
from switchboard.shared import topics
from switchboard.shared.envelope import Publication, Reply, RequestKind, Session, SocketState
from switchboard.shared.publisher import Publisher
from tests.support.backbone import FakeGateway, running_broker, running_service

FAST_PASSWORDS: dict[str, Any] = {
    "password_time_cost": 1, "password_memory_kib": 8, "password_parallelism": 1}


def factory(db: Path) -> Callable[[Publisher], RoomService]:
    def make(publisher: Publisher) -> RoomService:
        return RoomService(publisher, Config(room_db=str(db), **FAST_PASSWORDS))

    return make


async def event(gw: FakeGateway, endpoint: str, s: Session, name: str, *args: Any) -> Reply:
    reply = await gw.request(endpoint, kind=RequestKind.EVENT, session=s, event=name,
                             args=list(args))
    assert reply.ok, reply.error
    return reply


async def expect(gw: FakeGateway, topic: bytes, name: str) -> Publication:
    """The next publication, which must be ``name`` on ``topic``."""
    got_topic, pub = await gw.next_publication()
    assert (got_topic, pub.event) == (topic, name)
    return pub


async def test_connect_rooms_and_private_messages_over_zmq(tmp_path: Path) -> None:
    with running_broker() as broker:
        async with running_service(factory(tmp_path / "room.sqlite3"), broker) as (svc, cfg):
            gw = FakeGateway("gwa", broker=broker)
            try:
                info = (await gw.request(cfg.bind, kind=RequestKind.DESCRIBE)).info
                assert info is not None and info.name == "room"
                assert (RequestKind.CONNECT, "*", "", 30) in {
                    (r.kind, r.ns, r.event, r.priority) for r in info.routes}

                await gw.subscribe(topics.namespace("/"))
                a = gw.session(1, user_id="u1", username="alice")
                b = gw.session(2, user_id="u2", username="bob")
                hello = await gw.request(cfg.bind, kind=RequestKind.CONNECT, session=a, auth={})
                assert hello.ok and hello.emits[0].event == "welcome"
                assert hello.emits[0].args[0]["socketId"] == a.sid
                assert hello.emits[0].args[0]["serverId"] == "gwa"
                online = await expect(gw, topics.namespace("/"), "user online")
                assert online.args == [{"userId": "u1", "username": "alice"}]
                assert online.exclude == (a.sid,)
                assert (await gw.request(cfg.bind, kind=RequestKind.CONNECT, session=b,
                                         auth={})).ok
                await expect(gw, topics.namespace("/"), "user online")
                assert svc.registry.get(a.sid) is not None

                # a room message reaches the room's topic, and only members may send one
                room_topic = topics.room("/", "lobby")
                await gw.subscribe(room_topic)
                await event(gw, cfg.bind, a, "create room", {"roomId": "lobby",
                                                             "roomName": "Lobby"})
                joined = await event(gw, cfg.bind, a, "join room", {"roomId": "lobby"})
                assert joined.joins == ("lobby",) and joined.emits[0].event == "room joined"
                await expect(gw, room_topic, "user joined")
                await event(gw, cfg.bind, b, "join room", {"roomId": "lobby"})
                pub = await expect(gw, room_topic, "user joined")
                assert pub.args[0]["userCount"] == 2 and pub.exclude == (b.sid,)
                await event(gw, cfg.bind, a, "room message", {"roomId": "lobby",
                                                              "message": "hi all"})
                pub = await expect(gw, room_topic, "room message")
                assert (pub.room, pub.ns, pub.exclude) == ("lobby", "/", (a.sid,))
                assert pub.args[0]["message"] == "hi all"
                assert pub.args[0]["username"] == "alice"

                # a private message goes to the recipient's user room topic
                user_topic = topics.room("/", topics.user_room("u2"))
                await gw.subscribe(user_topic)
                ack = (await event(gw, cfg.bind, a, "private message",
                                   {"to": "u2", "content": "psst"})).ack
                assert ack is not None and ack[0]["success"] is True
                pub = await expect(gw, user_topic, "private message")
                assert pub.room == "user:u2"
                assert pub.args[0]["id"] == ack[0]["messageId"]
                assert pub.args[0]["content"] == "psst"
                nobody = await gw.request(cfg.bind, kind=RequestKind.EVENT, session=a,
                                          event="private message",
                                          args=[{"to": "u9", "content": "x"}])
                assert (nobody.ok, nobody.error) == (False, "user not online")

                # a refused join: a failed reply that also carries the `room error` event
                refused = await gw.request(cfg.bind, kind=RequestKind.EVENT, session=a,
                                           event="join room", args=[{"roomId": "nowhere"}])
                assert (refused.ok, refused.error) == (False, "room not found")
                assert [(e.event, e.args) for e in refused.emits] == [
                    ("room error", [{"message": "room not found"}])]
            finally:
                gw.close()


async def test_sync_and_lost_gateway_over_zmq(tmp_path: Path) -> None:
    """gwb reports its socket by SYNC; gwa heartbeats once, falls silent and is dropped,
    which gwb sees as `user left` in the room and `user offline` in the namespace."""
    with running_broker() as broker:
        make = factory(tmp_path / "room.sqlite3")
        async with running_service(make, broker, gateway_timeout=0.3) as (svc, cfg):
            gwa = FakeGateway("gwa")
            gwb = FakeGateway("gwb", broker=broker)
            try:
                a = gwa.session(1, user_id="u1", username="alice")
                assert (await gwa.request(cfg.bind, kind=RequestKind.CONNECT, session=a,
                                          auth={})).ok
                await event(gwa, cfg.bind, a, "create room", {"roomId": "lobby",
                                                              "roomName": "Lobby"})
                await event(gwa, cfg.bind, a, "join room", {"roomId": "lobby"})

                b = gwb.session(1, user_id="u2", username="bob")
                synced = await gwb.request(
                    cfg.bind, kind=RequestKind.SYNC,
                    sockets=(SocketState(b, ("user:u2", "lobby")),),
                )
                assert synced.ok
                assert [m.sid for m in svc.membership.members("lobby")] == [a.sid, b.sid]

                await gwb.subscribe(topics.room("/", "lobby"))
                await gwb.subscribe(topics.namespace("/"))
                # gwa's only heartbeat, sent now that gwb listens: the runner declares gwa
                # lost 0.3 s later, so the notices cannot precede the subscriptions.
                await gwa.heartbeat(cfg.bind, {"/": 1})
                left = await expect(gwb, topics.room("/", "lobby"), "user left")
                assert left.args == [{"socketId": a.sid, "username": "alice",
                                      "roomId": "lobby", "userCount": 1}]
                offline = await expect(gwb, topics.namespace("/"), "user offline")
                assert offline.args == [{"userId": "u1", "username": "alice"}]
                assert a.sid not in svc.registry and b.sid in svc.registry

                admin = gwb.session(2, ns="/admin", user_id="root", username="root",
                                    role="admin")
                assert (await gwb.request(cfg.bind, kind=RequestKind.CONNECT, session=admin,
                                          auth={})).ok
                stats = (await event(gwb, cfg.bind, admin, "get stats")).ack
                assert stats is not None
                assert (stats[0]["totalConnections"], stats[0]["adminConnections"]) == (2, 1)
                assert [r["userCount"] for r in stats[0]["rooms"]] == [1]
            finally:
                gwa.close()
                gwb.close()


async def test_restarted_gateway_instance_drops_its_ghosts_at_once(tmp_path: Path) -> None:
    """gwa restarts under its old id (as `switchboard up` restarts a killed gateway): its
    first request as a new instance drops the old instance's sockets at once, long before
    any heartbeat timeout, with the usual notices; their seats are free again, and a late
    request from the dead instance is not served."""
    with running_broker() as broker:
        make = factory(tmp_path / "room.sqlite3")
        async with running_service(make, broker, gateway_timeout=60) as (svc, cfg):
            old = FakeGateway("gwa", instance="i-old")
            gwb = FakeGateway("gwb", broker=broker, instance="i-b")
            new: FakeGateway | None = None
            try:
                a = old.session(1, user_id="u1", username="alice")
                assert (await old.request(cfg.bind, kind=RequestKind.CONNECT, session=a,
                                          auth={})).ok
                await event(old, cfg.bind, a, "create room", {"roomId": "duo",
                                                             "roomName": "Duo",
                                                             "maxUsers": 2})
                await event(old, cfg.bind, a, "join room", {"roomId": "duo"})
                b = gwb.session(1, user_id="u2", username="bob")
                c = gwb.session(2, user_id="u3", username="carol")
                for s in (b, c):
                    assert (await gwb.request(cfg.bind, kind=RequestKind.CONNECT, session=s,
                                              auth={})).ok
                await event(gwb, cfg.bind, b, "join room", {"roomId": "duo"})
                full = await gwb.request(cfg.bind, kind=RequestKind.EVENT, session=c,
                                         event="join room", args=[{"roomId": "duo"}])
                assert (full.ok, full.error) == (False, "room is full")

                await gwb.subscribe(topics.room("/", "duo"))
                await gwb.subscribe(topics.namespace("/"))
                new = FakeGateway("gwa", instance="i-new")
                assert (await new.heartbeat(cfg.bind, {})).ok
                left = await expect(gwb, topics.room("/", "duo"), "user left")
                assert left.args == [{"socketId": a.sid, "username": "alice",
                                      "roomId": "duo", "userCount": 1}]
                offline = await expect(gwb, topics.namespace("/"), "user offline")
                assert offline.args == [{"userId": "u1", "username": "alice"}]
                online = (await event(gwb, cfg.bind, b, "get online users")).ack
                assert online is not None
                assert sorted(u["id"] for u in online[0]["users"]) == ["u2", "u3"]
                await event(gwb, cfg.bind, c, "join room", {"roomId": "duo"})  # a free seat

                # The dead instance's request (late in a queue, say) gets no answer.
                with pytest.raises(TimeoutError):
                    await old.request(cfg.bind, timeout=0.5, kind=RequestKind.EVENT,
                                      session=a, event="get online users")
                assert svc.registry.get(a.sid) is None
            finally:
                old.close()
                gwb.close()
                if new is not None:
                    new.close()
