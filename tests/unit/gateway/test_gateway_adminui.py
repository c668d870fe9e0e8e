"""gateway.adminui through its interface: credentials, what a new UI socket gets, the
notices and stats it publishes, and the publications its commands become."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from switchboard.gateway.adminui import AdminUi, AdminUiConfig
from switchboard.gateway.index import LocalIndex, RoomObservers
from switchboard.shared import topics
from switchboard.shared.envelope import PubKind, Publication
from switchboard.shared.publisher import MemoryPublisher
from tests.support.gateway_parts import Subs, member

HASH = PasswordHasher(time_cost=1, memory_cost=8192).hash("s3cret")
NS = "/admin-ui"


def world() -> tuple[AdminUi, LocalIndex, MemoryPublisher]:
    observers = RoomObservers()
    index = LocalIndex(Subs(), observer=observers)
    publisher = MemoryPublisher("gw1")
    admin = AdminUi(AdminUiConfig(NS, "admin", HASH), "gw1", publisher, index, lambda: (3, 1))
    observers.add(admin)
    return admin, index, publisher


@pytest.mark.parametrize(("auth", "ok"), [
    ({"username": "admin", "password": "s3cret"}, True),
    ({"username": "admin", "password": "S3cret"}, False),
    ({"username": "root", "password": "s3cret"}, False),
    ({"username": "admin", "password": 1}, False),
    ({}, False), (None, False), ("admin:s3cret", False),
])
def test_credentials(auth: object, ok: bool) -> None:
    admin, _, _ = world()
    assert admin.check(auth) == (None if ok else "invalid credentials")


def test_a_ui_socket_gets_config_its_gateways_sockets_and_asks_the_others() -> None:
    admin, index, publisher = world()
    user = member(index, 1, rooms=("lobby",))
    ui = member(index, 2)
    ui.session = type(ui.session)(ui.sid, NS, "gw1")
    sent = dict(admin.ui_connected(ui))
    assert "EMIT" in sent["config"][0]["supportedFeatures"]
    (sockets,) = sent["all_sockets"]
    assert [s["id"] for s in sockets] == [user.sid]  # not the UI itself
    assert sockets[0]["rooms"] == [user.sid, "lobby"]
    assert sockets[0]["transport"] == "polling" and sockets[0]["nsp"] == "/"
    assert sent["server_stats"][0]["serverId"] == "gw1"
    topic, ask = publisher.published[-1]
    assert topic == topics.ALL_GATEWAYS and ask.kind is PubKind.REPORT and ask.sids == (ui.sid,)


def test_another_gateways_report_goes_to_the_ui_socket_only() -> None:
    admin, index, publisher = world()
    user = member(index, 1)
    admin.report(Publication(PubKind.REPORT, NS, sids=("gw9.ui",), source="gw9"))
    connected = [(t, p) for t, p in publisher.published if p.event == "socket_connected"]
    assert len(connected) == 1
    topic, pub = connected[0]
    assert topic == topics.socket("gw9.ui") and pub.sids == ("gw9.ui",)
    assert pub.args[0]["id"] == user.sid
    publisher.published.clear()
    admin.report(Publication(PubKind.REPORT, NS, sids=("gw1.ui",), source="gw1"))
    assert publisher.published == []  # its own ask: answered by ui_connected already


def test_notices_and_stats_go_to_the_whole_namespace() -> None:
    admin, index, publisher = world()
    sock = member(index, 1)
    admin.socket_connected(sock)
    index.join(sock, "r1")
    index.leave(sock, "r1")
    admin.count("rawConnection")
    admin.socket_disconnected(sock, "transport close")
    events = [(t, p.event, p.args[:3]) for t, p in publisher.published]
    ns_topic = topics.namespace(NS)
    assert [e[1] for e in events] == ["socket_connected", "room_joined", "room_left",
                                      "socket_disconnected"]
    assert all(t == ns_topic for t, _, _ in events)
    assert events[1][2] == ["/", "r1", sock.sid]
    assert events[3][2] == ["/", sock.sid, "transport close"]
    stats = admin.stats()
    assert (stats["clientsCount"], stats["pollingClientsCount"]) == (3, 1)
    assert stats["namespaces"] == [{"name": "/", "socketsCount": 1}]
    assert [e["type"] for e in stats["aggregatedEvents"]] == ["rawConnection"]
    assert admin.stats()["aggregatedEvents"] == stats["aggregatedEvents"]  # a look: kept
    publisher.published.clear()
    admin.publish_stats()  # the timer's publication takes them
    (topic, pub), = publisher.published
    assert topic == ns_topic and pub.event == "server_stats"
    assert [e["type"] for e in pub.args[0]["aggregatedEvents"]] == ["rawConnection"]
    assert admin.stats()["aggregatedEvents"] == []


async def test_a_failing_address_is_locked_out_without_a_hash_check() -> None:
    admin, _, _ = world()
    wrong = {"username": "admin", "password": "guess"}
    for _ in range(10):
        assert await admin.sign_in(wrong, "10.0.0.9") == "invalid credentials"
    assert await admin.sign_in({"username": "admin", "password": "s3cret"}, "10.0.0.9") == (
        "too many failed sign-ins; try again later")
    assert await admin.sign_in({"username": "admin", "password": "s3cret"}, "10.0.0.8") is None


def test_credentials_in_headers_are_not_shown() -> None:
    admin, index, _ = world()
    sock = member(index, 1, headers={"authorization": "Bearer x", "Cookie": "s=1",
                                     "user-agent": "ua"})
    assert admin.serialize(sock)["handshake"]["headers"] == {
        "authorization": "[redacted]", "Cookie": "[redacted]", "user-agent": "ua"}
    assert admin.serialize(sock)["clientId"] == sock.client.conn.sid


def test_commands_become_publications() -> None:
    admin, _, publisher = world()
    assert admin.command("emit", ["/", "", "hello", 1]) is None
    assert admin.command("emit", ["/", "room1", "hello"]) is None
    assert admin.command("emit", ["/", "gw2.abc", "hello"]) is None
    assert admin.command("join", ["/", "r2", "gw2.abc"]) is None
    assert admin.command("leave", ["/", "r2", "gw2.abc"]) is None
    assert admin.command("_disconnect", ["/", False, "gw2.abc"]) is None
    assert admin.command("_disconnect", ["/", True, "gw2.abc"]) is None
    got = [(t, p.kind, p.event, p.room, p.sids) for t, p in publisher.published]
    assert got == [
        (topics.namespace("/"), PubKind.EMIT, "hello", None, ()),
        (topics.room("/", "room1"), PubKind.EMIT, "hello", "room1", ()),
        (topics.room("/", "gw2.abc"), PubKind.EMIT, "hello", "gw2.abc", ()),
        (topics.socket("gw2.abc"), PubKind.EMIT, "hello", None, ("gw2.abc",)),
        (topics.socket("gw2.abc"), PubKind.JOIN, "", "r2", ("gw2.abc",)),
        (topics.socket("gw2.abc"), PubKind.LEAVE, "", "r2", ("gw2.abc",)),
        (topics.socket("gw2.abc"), PubKind.DISCONNECT, "", None, ("gw2.abc",)),
        (topics.socket("gw2.abc"), PubKind.CLOSE, "", None, ("gw2.abc",)),
    ]


@pytest.mark.parametrize(("event", "args"), [
    ("emit", ["/"]), ("emit", ["/", "", ""]), ("join", ["/", "r", "not-a-sid"]),
    ("_disconnect", ["/", False, 5]), ("drop tables", []),
])
def test_malformed_commands_are_refused(event: str, args: list[object]) -> None:
    admin, _, publisher = world()
    assert admin.command(event, list(args)) is not None
    assert publisher.published == []
