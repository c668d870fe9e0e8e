"""gateway.pipelines through its interfaces: scripted services (the Services protocol), a
real local index over a fake subscriber, real sessions on the polling transport; what the
client would receive is read from its poll queue."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from switchboard.gateway.protocol import ConnectRequested
from switchboard.gateway.protocol import EventReceived as Ev
from switchboard.shared.envelope import Emit, Reply, RequestKind, Session
from switchboard.shared.errors import ServiceUnavailable
from tests.support.pipeline_world import K, World, ok


def accept_all(service: str, kind: RequestKind, fields: dict[str, Any]) -> Reply:
    if kind == K.CONNECT and service == "auth":
        session = fields["session"].with_user("u1", "alice", "user")
        return ok(session=session, joins=("user:u1",))
    if kind == K.CONNECT:
        return ok(emits=(Emit("welcome", [{"hi": 1}]),))
    if kind == K.FILTER:
        return ok(args=[{"clean": True}])
    if kind == K.EVENT:
        return ok(ack=[{"success": True}], joins=("lobby",), emits=(Emit("said", [1]),))
    return ok()


async def test_connect_runs_every_stage_then_acks_subscribed_and_emits() -> None:
    w = World(accept_all)
    sock = await w.connected()
    stages = [(s, k) for s, k, _ in w.services.seen]
    assert stages == [("auth", K.CONNECT), ("room", K.CONNECT)]
    # The second stage saw the session the first one returned, and the handshake headers.
    assert w.services.seen[1][2]["session"].user_id == "u1"
    assert w.services.seen[0][2]["headers"] == {"authorization": "Bearer t"}
    packets = w.sent()
    assert packets[0] == "40" + json.dumps({"sid": sock.sid}, separators=(",", ":"))
    assert packets[1] == '42["welcome",{"hi":1}]'
    assert sock.live and sock.rooms == {"user:u1"}
    assert set(w.subs.topics) == {b"n/\x00", b"r/\x00user:u1\x00"}


async def test_a_refusal_is_a_connect_error_and_the_stages_that_accepted_hear_it() -> None:
    def refuse_at_room(service: str, kind: RequestKind, fields: dict[str, Any]) -> Reply:
        if kind == K.CONNECT and service == "room":
            return Reply(0, ok=False, error="Banned")
        return ok()

    w = World(refuse_at_room)
    w.client.conn.receive_frame("40", 0.0)
    await w.pipelines.connect(w.client, ConnectRequested("/", {}))
    assert w.sent() == ['44{"message":"Banned"}']
    assert "/" not in w.client.sockets and not w.subs.topics
    await asyncio.gather(*w.tasks)
    # auth accepted, so it hears the socket is gone; room refused, so it does not.
    assert [(s, k) for s, k, _ in w.services.seen] == [
        ("auth", K.CONNECT), ("room", K.CONNECT), ("auth", K.DISCONNECT)]


async def test_an_unknown_namespace_is_refused_without_asking_anyone() -> None:
    w = World(accept_all)
    w.client.conn.receive_frame("40/nope,", 0.0)
    await w.pipelines.connect(w.client, ConnectRequested("/nope", {}))
    assert w.sent() == ['44/nope,{"message":"Invalid namespace"}']
    assert w.services.seen == []


async def test_an_event_passes_the_filter_then_its_owner_whose_reply_is_applied() -> None:
    w = World(accept_all)
    await w.connected()
    w.sent()
    await w.event(Ev("/", "say", [{"raw": True}], 7))
    filter_, owner = w.services.seen[-2:]
    assert (filter_[0], filter_[1], owner[0], owner[1]) == ("mod", K.FILTER, "room", K.EVENT)
    # One request: the filter passes it on to the owner (its route), the owner answers.
    assert w.services.asked[-1] == ("mod", K.FILTER, ("room",))
    assert owner[2]["args"] == [{"clean": True}]  # the filter's cleaned args
    assert w.sent() == ['437[{"success":true}]', '42["said",1]']
    assert "lobby" in w.client.sockets["/"].rooms


@pytest.mark.parametrize(("ack_id", "expected"), [
    (7, ['437[{"rooms":[]}]', '42["said",1]']),  # acked: the answer is the ack only
    (None, ['42["list",{"rooms":[]}]', '42["said",1]']),  # no ack: the event instead
])
async def test_an_emit_unless_acked_reaches_only_a_client_that_passed_no_ack(
        ack_id: int | None, expected: list[str]) -> None:
    def script(service: str, kind: RequestKind, fields: dict[str, Any]) -> Reply:
        if kind == K.EVENT:
            return ok(ack=[{"rooms": []}], emits=(
                Emit("list", [{"rooms": []}], unless_acked=True), Emit("said", [1])))
        return accept_all(service, kind, fields)

    w = World(script)
    await w.connected()
    w.sent()
    await w.event(Ev("/", "say", [], ack_id))
    assert w.sent() == expected


@pytest.mark.parametrize(("script", "expected"), [
    (lambda s, k, f: Reply(0, ok=False, error="rate limit exceeded") if k == K.FILTER
     else accept_all(s, k, f),
     '437[{"success":false,"error":"rate limit exceeded"}]'),
    (lambda s, k, f: ok() if k == K.FILTER and f["event"] == "nobody" else accept_all(s, k, f),
     '437[{"success":false,"error":"unknown event: nobody"}]'),
])
async def test_refused_and_unknown_events_fail_the_ack(script: Any, expected: str) -> None:
    w = World(script)
    await w.connected()
    w.sent()
    name = "nobody" if "unknown" in expected else "say"
    await w.event(Ev("/", name, [], 7))
    assert w.sent() == [expected]


async def test_an_unavailable_service_is_an_error_event_without_an_ack() -> None:
    def down(service: str, kind: RequestKind, fields: dict[str, Any]) -> Reply:
        if kind == K.EVENT:
            raise ServiceUnavailable("room did not answer in time")
        return accept_all(service, kind, fields)

    w = World(down)
    await w.connected()
    w.sent()
    await w.event(Ev("/", "say", [], None))
    assert w.sent() == ['42["error",{"event":"say","message":"service unavailable"}]']


async def test_a_socket_that_leaves_is_unindexed_and_its_services_told() -> None:
    w = World(accept_all)
    sock = await w.connected()
    w.pipelines.drop_socket(sock)
    await asyncio.gather(*w.tasks)
    assert {s for s, k, _ in w.services.seen if k == K.DISCONNECT} == {"auth", "room"}
    assert not w.subs.topics and w.index.get(sock.sid) is None


async def test_sync_reports_every_socket_with_its_rooms() -> None:
    w = World(accept_all)
    sock = await w.connected()
    await w.pipelines.connects.sync_service("room")
    service, kind, fields = w.services.seen[-1]
    assert (service, kind) == ("room", K.SYNC)
    [state] = fields["sockets"]
    assert state.session == sock.session and state.rooms == ("user:u1",)


async def test_a_new_transport_is_told_to_the_services_that_keep_sockets() -> None:
    w = World(accept_all)
    sock = await w.connected()
    w.client.leave_polling()  # upgraded
    w.pipelines.transport_changed(sock)
    await asyncio.gather(*w.tasks)
    assert w.services.seen[-1][:2] == ("room", K.UPDATE)
    session: Session = w.services.seen[-1][2]["session"]
    assert session.transport == "websocket" and sock.session.transport == "websocket"
