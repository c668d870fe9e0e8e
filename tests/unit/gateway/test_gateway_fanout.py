"""gateway.fanout through its interfaces: broker frames in, what local sockets receive out
(polling sessions' queues), membership kept in the index, actions asked of the gateway."""

from __future__ import annotations

from typing import Any

import msgpack

from switchboard.gateway import metrics as m
from switchboard.gateway.client import Client, NsSocket
from switchboard.gateway.continuity import AskReplay
from switchboard.gateway.fanout import Fanout
from switchboard.gateway.index import LocalIndex
from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, Publication
from tests.support.gateway_parts import Subs, member


class Actions:
    def __init__(self) -> None:
        self.done: list[tuple[str, Any]] = []

    def drop_socket(self, sock: NsSocket) -> None:
        self.done.append(("drop", sock.sid))

    def close_client(self, client: Client, reason: str) -> None:
        self.done.append(("close", reason))

    def resync(self, service: str) -> None:
        self.done.append(("resync", service))

    def peer(self, announcement: Publication) -> None:
        self.done.append(("peer", announcement.source))

    def report(self, pub: Publication) -> None:
        self.done.append(("report", pub.sids))

    def release(self, pub: Publication) -> None:
        self.done.append(("release", pub.args))

    def policy_changed(self, pub: Publication) -> None:
        self.done.append(("policy", pub.args))

    def replay(self, ask: AskReplay) -> None:
        self.done.append(("replay", ask))


def received(sock: NsSocket) -> list[str]:
    polling = sock.client.polling
    assert polling is not None
    body = polling.get()
    polling.abandon()
    return [] if body is None else body.split("\x1e")


def world() -> tuple[Fanout, LocalIndex, Subs, Actions]:
    subs, actions = Subs(), Actions()
    index = LocalIndex(subs)
    return Fanout(subs, index, actions, m.EventMeters()), index, subs, actions


def frames(topic: bytes, pub: Publication) -> list[bytes]:
    return [topic, pub.encode()]


async def test_a_room_message_reaches_its_members_once_each_but_the_excluded() -> None:
    fanout, index, _, _ = world()
    a, b, c = member(index, 1, ("lobby",)), member(index, 2, ("lobby",)), member(index, 3)
    pub = Publication(PubKind.EMIT, "/", "chat message", [{"n": 1}], room="lobby",
                      exclude=(a.sid,))
    fanout.on_message(frames(topics.room("/", "lobby"), pub))
    assert received(b) == ['42["chat message",{"n":1}]']
    assert received(a) == [] and received(c) == []
    assert fanout.counters == {"publications": 1, "deliveries": 1}


async def test_membership_publications_change_the_index_and_its_subscriptions() -> None:
    fanout, index, subs, _ = world()
    a = member(index, 1)
    fanout.on_message(frames(topics.gateway("gw1"),
                             Publication(PubKind.JOIN, "/", room="r", sids=(a.sid,))))
    assert a.rooms == {"r"} and subs.topics[topics.room("/", "r")] == 1
    fanout.on_message(frames(topics.gateway("gw1"),
                             Publication(PubKind.LEAVE, "/", room="r", sids=(a.sid,))))
    assert a.rooms == set() and topics.room("/", "r") not in subs.topics


async def test_removing_a_socket_leaves_a_newer_one_of_the_same_id_alone() -> None:
    fanout, index, subs, _ = world()
    old = member(index, 1, ("r",))
    new = member(index, 1, ("r",))  # the same socket id, restored here meanwhile
    assert index.get(new.sid) is new
    index.remove(old)
    assert index.get(new.sid) is new and index.sockets() == [new] and index.counts() == {"/": 1}
    assert subs.topics[topics.room("/", "r")] == 1  # the old one's subscription only
    index.remove(old)  # twice: nothing more
    assert subs.topics[topics.room("/", "r")] == 1
    fanout.on_message(frames(topics.room("/", "r"),
                             Publication(PubKind.EMIT, "/", "e", [1], room="r")))
    assert received(new) == ['42["e",1]']
    index.remove(new)
    assert index.get(new.sid) is None and topics.room("/", "r") not in subs.topics


async def test_a_kick_tells_the_socket_then_disconnects_it() -> None:
    fanout, index, _, actions = world()
    a = member(index, 1)
    fanout.on_message(frames(topics.gateway("gw1"), Publication(
        PubKind.DISCONNECT, "*", "kicked", [{"reason": "bye"}], sids=(a.sid,))))
    assert received(a) == ['42["kicked",{"reason":"bye"}]', "41"]
    assert actions.done == [("drop", a.sid)]


async def test_emits_asking_for_acks_go_one_by_one_each_with_its_ack_id() -> None:
    fanout, index, _, _actions = world()
    a, b = member(index, 1), member(index, 2)
    a.expect_ack("earlier")  # a has an ack outstanding already: its next id is 2
    fanout.on_message(frames(topics.gateway("gw1"), Publication(
        PubKind.EMIT, "/", "question", [1], sids=(a.sid, b.sid), ack_event="answer")))
    assert received(a) == ['422["question",1]'] and received(b) == ['421["question",1]']
    assert a.take_ack(2) == "answer" and b.take_ack(1) == "answer"


async def test_control_messages() -> None:
    fanout, index, subs, actions = world()
    a = member(index, 1)
    fanout.on_message([b"r/\x00x\x00", topics.SUBSCRIBED_MARKER])
    assert subs.confirmations == [b"r/\x00x\x00"]
    fanout.on_message(frames(topics.ALL_GATEWAYS, Publication(PubKind.RESYNC, "", source="room")))
    fanout.on_message(frames(topics.ALL_GATEWAYS, Publication(
        PubKind.PEER, "", args=["i", "tcp://x:1"], source="gw2")))
    fanout.on_message(frames(topics.gateway("gw1"), Publication(
        PubKind.CLOSE, "*", sids=(a.sid,))))
    assert actions.done == [("resync", "room"), ("peer", "gw2"), ("close", "closed by server")]
    assert fanout.counters["publications"] == 2  # announcements are not traffic
    fanout.on_message([topics.gateway("gw1"), b"\xc1 not msgpack"])  # dropped, logged
    fanout.on_message([b"one frame"])


async def test_the_broker_heartbeat_keeps_it_alive() -> None:
    fanout, _, _, _ = world()
    fanout.brokers[0].missed = 5
    assert not fanout.broker_up
    fanout.on_message([topics.BROKER_HEARTBEAT, msgpack.packb(("inst", 1))])
    assert fanout.broker_up and fanout.broker_seen.is_set()
    assert fanout.brokers[0].instance == "inst"
