"""The gateway's small pure pieces: routing from service descriptions, WebSocket frames,
polls held for other gateways."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
from typing import Any

import pytest

from switchboard.gateway import wsframe
from switchboard.gateway.answers import RemoteWaits
from switchboard.gateway.config import GatewayConfig
from switchboard.gateway.health import HealthFigures, HealthLimits, evaluate
from switchboard.gateway.lane import Lane
from switchboard.gateway.routing import Owner, RoutingTable
from switchboard.shared.envelope import RequestKind, Route, ServiceInfo, Session
from switchboard.shared.partitions import Membership

K = RequestKind


def table() -> RoutingTable:
    return RoutingTable([
        ServiceInfo("auth", "1", (Route(K.CONNECT, "*", "", 10),)),
        ServiceInfo("room", "1", (Route(K.CONNECT, "/", "", 30), Route(K.CONNECT, "/chat", "", 30),
                                  Route(K.EVENT, "/", "say"), Route(K.EVENT, "*", "ping"),
                                  Route(K.DISCONNECT, "*"), Route(K.SYNC, "*"))),
        ServiceInfo("mod", "1", (Route(K.FILTER, "*", "", 10), Route(K.CONNECT, "*", "", 20))),
        ServiceInfo("game", "1", (Route(K.CONNECT, "/game", "", 40), Route(K.EVENT, "*", "say"))),
    ])


def test_namespaces_exist_only_where_some_service_declares_them_exactly() -> None:
    assert table().namespaces == frozenset({"/", "/chat", "/game"})


def test_connect_stages_run_by_priority_wildcards_included() -> None:
    assert table().connect_stages("/") == (Owner("auth"), Owner("mod"), Owner("room"))
    assert table().connect_stages("/game") == (Owner("auth"), Owner("mod"), Owner("game"))
    assert table().connect_stages("/unknown") == ()


def test_owners_exact_namespace_beats_wildcard() -> None:
    t = table()
    assert t.owner("/", "say") == Owner("room")
    assert t.owner("/game", "say") == Owner("game")
    assert t.owner("/chat", "ping") == Owner("room")
    assert t.owner("/", "nobody") is None
    assert t.filters("/chat") == ("mod",)
    assert t.disconnect_listeners("/game") == ("room",)
    assert t.sync_listeners() == ("room",)


def test_a_service_redescribing_itself_replaces_its_routes() -> None:
    t = table()
    t.update(ServiceInfo("game", "2", ()))
    assert t.namespaces == frozenset({"/", "/chat"})
    assert t.owner("/", "say") == Owner("room")


def sharded(*names: str) -> RoutingTable:
    routes = (Route(K.CONNECT, "/", "", 30, "identity"),
              Route(K.EVENT, "/", "join", key="arg.roomId|arg"),
              Route(K.EVENT, "/", "list", key="all"), Route(K.DISCONNECT, "*"))
    return RoutingTable([ServiceInfo("auth", "1", (Route(K.CONNECT, "*", "", 10),)),
                         *(ServiceInfo(n, "1", routes, "room", names) for n in names)])


def test_a_partitioned_service_is_one_owner_and_one_stage_picked_by_key() -> None:
    names = ("room-0", "room-1", "room-2")
    t = sharded(*names)
    group = Membership.of(names)
    assert t.group("room") == group
    assert t.connect_stages("/") == (Owner("auth"), Owner("room", "identity", group))
    join = t.owner("/", "join")
    assert join == Owner("room", "arg.roomId|arg", group)
    alice = Session("s1", "/", "gw", user_id="alice")
    # The room's owner, however its id is spelled in the payload the owner accepts.
    for args in (["lobby"], [{"roomId": "lobby"}], [{"roomId": " lobby "}]):
        assert join.pick(alice, args) == group.owner("lobby")
    # Without a room id: the sender's instance, as for the CONNECT stage.
    stage = t.connect_stages("/")[1]
    assert join.pick(alice, [{}]) == group.owner("alice") == stage.pick(alice, [])
    anonymous = Session("s2", "/", "gw")
    assert stage.pick(anonymous, []) == group.owner("s2")
    listing = t.owner("/", "list")
    assert listing is not None and listing.gathered and listing.members == names
    assert not join.gathered
    # Listeners are every instance: each keeps what it owns.
    assert t.disconnect_listeners("/") == names


def test_one_instance_group_needs_no_hashing_and_a_newer_epoch_wins() -> None:
    t = sharded("room")
    join = t.owner("/", "join")
    assert join is not None
    assert join.pick(Session("s", "/", "gw"), ["x"]) == "room"
    t.update(ServiceInfo("room-9", "1", (), "room", ("room", "room-9"), epoch=3))
    assert t.group("room") == Membership(3, ("room", "room-9"))


def test_a_configured_instance_that_is_no_live_member_is_spare() -> None:
    """Leases (services/room/leases.py): room-1's lapsed, room-2 never started; the members
    serve their share, so a gateway needs neither (its /health stays ready)."""
    configured = ("room-0", "room-1", "room-2")
    t = RoutingTable([ServiceInfo("room-0", "1", (), "room", ("room-0", "room-1"), 4,
                                  configured),
                      ServiceInfo("room-1", "1", (), "room", ("room-0", "room-1"), 4,
                                  configured)])
    assert [t.spare(n) for n in configured] == [False, False, True]
    t.update(ServiceInfo("room-0", "1", (), "room", ("room-0",), 5, configured))
    assert t.group("room") == Membership(5, ("room-0",))  # the newest epoch wins
    assert [t.spare(n) for n in configured] == [False, True, True]
    assert not t.spare("auth")  # not an instance of any group


def test_an_instance_that_left_its_group_is_told_of_no_sockets() -> None:
    """room-2 handed its share back (or its lease lapsed): its last description stays, but
    DISCONNECTs and SYNCs go to the members only."""
    from switchboard.shared.envelope import RequestKind, Route

    routes = (Route(RequestKind.CONNECT, "/"), Route(RequestKind.DISCONNECT, "/"),
              Route(RequestKind.SYNC, "*"))
    configured = ("room-0", "room-1", "room-2")
    three = ("room-0", "room-1", "room-2")
    t = RoutingTable([ServiceInfo(n, "1", routes, "room", three, 6, configured)
                      for n in three])
    assert t.disconnect_listeners("/") == three and t.sync_listeners() == three
    for name in ("room-0", "room-1"):
        t.update(ServiceInfo(name, "1", routes, "room", ("room-0", "room-1"), 7, configured))
    assert t.disconnect_listeners("/") == ("room-0", "room-1")
    assert t.sync_listeners() == ("room-0", "room-1")


@pytest.mark.parametrize(("payload", "head"), [
    ("42", b"\x81\x02"),
    (b"\x00" * 3, b"\x82\x03"),
    ("x" * 126, b"\x81\x7e\x00\x7e"),
    ("x" * 65536, b"\x81\x7f" + (65536).to_bytes(8, "big")),
])
def test_server_frames_are_unmasked_and_sized_by_rfc_6455(payload: str | bytes,
                                                          head: bytes) -> None:
    frame = wsframe.encode(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    assert frame == head + data


def test_a_packet_with_attachments_is_its_frames_in_order() -> None:
    assert wsframe.encode_all(['451-["x",{}]', b"\x01"]) == (
        wsframe.encode('451-["x",{}]') + wsframe.encode(b"\x01"))


def test_health_an_optional_service_down_is_a_warning_a_required_one_unhealthy() -> None:
    limits = HealthLimits(max_connections=0, max_memory_mb=0, max_error_rate=0.5)

    def figures(**up: bool) -> HealthFigures:
        return HealthFigures(broker_up=True, services_up=up, connections=0, rss_mb=0.0,
                             recent_requests=0, recent_failures=0,
                             optional=frozenset({"recovery"}))

    health = evaluate(figures(room=True, recovery=False), limits)
    assert (health.status, health.http_status) == ("warning", 200)
    assert health.reasons == ["service recovery unreachable"]
    health = evaluate(figures(room=False, recovery=True), limits)
    assert (health.status, health.http_status) == ("unhealthy", 503)


def test_polls_held_for_a_lost_gateway_instance_are_abandoned_and_no_others() -> None:
    waits = RemoteWaits(None)
    abandoned: list[str] = []
    for request_id, (name, gateway, instance) in enumerate(
            (("old-1", "gw1", "a"), ("old-2", "gw1", "a"), ("new", "gw1", "b"),
             ("other", "gw2", "a"))):
        answer = waits.answer(name.encode(), request_id, gateway, instance)
        answer.on_abort(functools.partial(abandoned.append, name))
    assert waits.waiting == 4
    assert waits.abort_from("gw1", "a") == 2
    assert sorted(abandoned) == ["old-1", "old-2"]
    assert waits.abort_from("gw1", "a") == 0  # each only once
    waits.abort("gw1", "b", 2)  # the ABORT of a live relay still works (whatever its
    # connection: after a reconnect its ZeroMQ identity is a new one)
    assert abandoned[-1] == "new" and waits.waiting == 1


async def test_a_refused_packet_lets_the_next_one_send_at_once() -> None:
    """A packet refused before its request (gateway.policing) resolves its turn's "sent":
    the next packet's request need not wait for the replies of those before."""
    lane = Lane("test", lambda: None, lambda: None)
    held = asyncio.get_running_loop().create_future()
    order: list[str] = []

    async def slow(turn: Any) -> None:
        await turn.may_send()
        turn.sent.set_result(None)  # its request left
        await held  # its reply is slow

    async def refused(turn: Any) -> None:
        await turn.may_send()
        turn.nothing_sent()
        order.append("refused")

    async def third(turn: Any) -> None:
        await turn.may_send()
        order.append("third sent")

    lane.submit(slow)
    lane.submit(refused)
    lane.submit(third)
    async with asyncio.timeout(5):
        while order != ["refused", "third sent"]:
            await asyncio.sleep(0.001)
    held.set_result(None)


def test_the_policy_service_is_one_of_the_services_or_none() -> None:
    services = ("auth=tcp://127.0.0.1:1", "moderation=tcp://127.0.0.1:2")
    assert GatewayConfig(services=services).policy_source() == "moderation"  # auto
    assert GatewayConfig(services=services[:1]).policy_source() is None  # auto, none there
    assert GatewayConfig(services=services, policy_service="none").policy_source() is None
    assert GatewayConfig(services=services, policy_service="auth").policy_source() == "auth"
    with pytest.raises(ValueError, match="--policy-service: nosuch is none of --services"):
        GatewayConfig(services=services, policy_service="nosuch").policy_source()


def test_the_auth_service_is_one_of_the_services_or_none() -> None:
    services = ("auth=tcp://127.0.0.1:1", "moderation=tcp://127.0.0.1:2")
    assert GatewayConfig(services=services).auth_source() == "auth"  # auto
    assert GatewayConfig(services=services[1:]).auth_source() is None  # auto, none there
    assert GatewayConfig(services=services, auth_service="none").auth_source() is None
    assert GatewayConfig(services=services,
                         auth_service="moderation").auth_source() == "moderation"
    with pytest.raises(ValueError, match="--auth-service: nosuch is none of --services"):
        GatewayConfig(services=services, auth_service="nosuch").auth_source()


@pytest.mark.parametrize("option", ["--policy-service", "--auth-service"])
@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_source_service_that_names_nothing_stops_the_gateway_with_exit_2(
        how: str, option: str) -> None:
    argv = [sys.executable, "-m", "switchboard", "gateway", "--port", "0"]
    env = dict(os.environ)
    if how == "flag":
        argv += [option, "nosuch"]
    else:
        env["SWITCHBOARD_" + option[2:].replace("-", "_").upper()] = "nosuch"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"{option}: nosuch is none of --services" in done.stderr


def test_gathered_parts_merge_into_one_answer_that_names_the_missing() -> None:
    from switchboard.gateway.gather import gathered, merge
    from switchboard.shared.envelope import Emit, Reply

    assert merge([{"n": 1, "ok": True, "by": {"/": 2}}, {"n": 2, "ok": True, "by": {"/": 1,
                  "/chat": 4}}]) == {"n": 3, "ok": True, "by": {"/": 3, "/chat": 4}}
    # Lists concatenate; an id an earlier part listed is left out, a part's own repeats kept.
    assert merge([[{"id": "g"}, {"id": "a"}, {"id": "a", "x": 1}], [{"id": "g"}, {"id": "b"}],
                  ]) == [{"id": "g"}, {"id": "a"}, {"id": "a", "x": 1}, {"id": "b"}]
    one = Reply(1, ack=[{"success": True, "rooms": [{"id": "r1"}]}],
                emits=(Emit("room list", [{"rooms": [{"id": "r1"}]}], unless_acked=True),))
    two = Reply(1, ack=[{"success": True, "rooms": [{"id": "r2"}]}],
                emits=(Emit("room list", [{"rooms": [{"id": "r2"}]}], unless_acked=True),))
    whole = gathered({"b": two, "a": one}, ())
    assert whole.ack == [{"success": True, "rooms": [{"id": "r1"}, {"id": "r2"}]}]
    assert whole.emits[0].args == [{"rooms": [{"id": "r1"}, {"id": "r2"}]}]
    assert whole.emits[0].unless_acked
    short = gathered({"a": one}, ("b",))
    assert short.ack == [{"success": True, "rooms": [{"id": "r1"}], "partial": True,
                          "missing": ["b"]}]
    # A failing instance (busy, an internal error) is missing; all failing: the failure.
    busy = Reply(1, ok=False, error="service busy")
    assert gathered({"a": one, "b": busy}, ()) == short
    assert gathered({"a": busy, "b": busy}, ()) is busy
    ordered = merge([[{"id": "x", "_order": [2, "x"]}], [{"id": "y", "_order": [1, "y"]}]])
    assert ordered == [{"id": "y"}, {"id": "x"}]  # oldest first across instances
