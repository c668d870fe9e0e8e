"""The per-connection state machine: handshake, namespaces, heartbeat, limits, closing."""

from __future__ import annotations

import json

import pytest

from switchboard.gateway.protocol.connection import (
    AckReceived,
    Closed,
    Connection,
    ConnectionConfig,
    ConnectRequested,
    DisconnectRequested,
    Event,
    EventReceived,
)
from switchboard.gateway.protocol.errors import NotConnected, ProtocolError

PH0 = '{"_placeholder":true,"num":0}'
PH1 = '{"_placeholder":true,"num":1}'
SUITE = ConnectionConfig(ping_interval=0.3, ping_timeout=0.2)


def new(config: ConnectionConfig = SUITE, now: float = 1000.0) -> Connection:
    conn = Connection("eio-sid", config, now)
    conn.data_to_send()  # drop the OPEN frame
    return conn


def connected(namespace: str = "/", config: ConnectionConfig = SUITE) -> Connection:
    conn = new(config)
    frame = "40" if namespace == "/" else f"40{namespace},"
    assert conn.receive_frame(frame, 1000.0) == [ConnectRequested(namespace, {})]
    conn.accept(namespace, "sio-sid")
    conn.data_to_send()
    return conn


# ------------------------------------------------------------------ handshake


def test_open_frame_queued_on_construction() -> None:
    conn = Connection("abc", SUITE, 0.0)
    assert conn.data_to_send() == [
        '0{"sid":"abc","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}'
    ]
    assert conn.data_to_send() == []
    assert conn.sid == "abc"
    assert conn.config is SUITE
    assert not conn.closed
    assert conn.namespaces == frozenset()
    assert conn.pending == frozenset()


def test_open_frame_default_config() -> None:
    frame = Connection("abc", ConnectionConfig(), 0.0).data_to_send()[0]
    assert isinstance(frame, str)
    value = json.loads(frame[1:])
    assert (value["pingInterval"], value["pingTimeout"], value["maxPayload"]) == (
        25000,
        20000,
        1_000_000,
    )


def test_connection_is_slotted() -> None:
    conn = new()
    assert not hasattr(conn, "__dict__")
    with pytest.raises(AttributeError):
        conn.extra = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("frame", "namespace", "auth", "reply"),
    [
        ("40", "/", {}, '40{"sid":"S"}'),
        ('40{"token":"123"}', "/", {"token": "123"}, '40{"sid":"S"}'),
        ("40/custom,", "/custom", {}, '40/custom,{"sid":"S"}'),
        ('40/custom,{"token":"abc"}', "/custom", {"token": "abc"}, '40/custom,{"sid":"S"}'),
        ("40/custom", "/custom", {}, '40/custom,{"sid":"S"}'),
    ],
)
def test_connect_and_accept(frame: str, namespace: str, auth: dict[str, str], reply: str) -> None:
    conn = new()
    assert conn.receive_frame(frame, 1000.0) == [ConnectRequested(namespace, auth)]
    assert conn.pending == {namespace}
    assert conn.namespaces == frozenset()
    assert conn.data_to_send() == []  # nothing before the app decides
    conn.accept(namespace, "S")
    assert conn.data_to_send() == [reply]
    assert conn.namespaces == {namespace}
    assert conn.pending == frozenset()
    assert conn.is_connected(namespace)


@pytest.mark.parametrize(("frame", "namespace", "reply"), [
    # Socket.IO 4.6 connection state recovery: the CONNECT reply carries the recovery id;
    # a client coming back sends it with its last offset, which the app sees in the auth.
    ('40{"token":"t","pid":"P1","offset":"o1-2a"}', "/", '40{"sid":"S","pid":"P1"}'),
    ('40/chat,{"pid":"P1"}', "/chat", '40/chat,{"sid":"S","pid":"P1"}'),
])
def test_accept_with_a_recovery_pid(frame: str, namespace: str, reply: str) -> None:
    conn = new()
    [request] = conn.receive_frame(frame, 1000.0)
    assert isinstance(request, ConnectRequested) and request.auth["pid"] == "P1"
    conn.accept(namespace, "S", "P1")
    assert conn.data_to_send() == [reply]


def test_refuse_unknown_namespace_like_test_suite() -> None:
    conn = new()
    assert conn.receive_frame("40/random", 1000.0) == [ConnectRequested("/random", {})]
    conn.refuse("/random", "Invalid namespace")
    assert conn.data_to_send() == ['44/random,{"message":"Invalid namespace"}']
    assert conn.pending == frozenset()
    assert not conn.closed
    # the client may try again
    assert conn.receive_frame("40/random", 1000.0) == [ConnectRequested("/random", {})]


def test_refuse_with_data() -> None:
    conn = new()
    conn.receive_frame("40", 1000.0)
    conn.refuse("/", "Not authorized", {"code": 401, "hint": "ünï"})
    assert conn.data_to_send() == [
        '44{"message":"Not authorized","data":{"code":401,"hint":"ünï"}}'
    ]


def test_accept_and_refuse_require_pending() -> None:
    conn = new()
    with pytest.raises(NotConnected):
        conn.accept("/", "S")
    with pytest.raises(NotConnected):
        conn.refuse("/", "no")
    conn = connected()
    with pytest.raises(NotConnected) as info:
        conn.accept("/", "S")
    assert info.value.reason == "namespace not pending"
    assert isinstance(info.value, ProtocolError)


# ------------------------------------------------------------------ namespaces


def test_disconnect_last_namespace_keeps_connection_open() -> None:
    conn = connected()
    assert conn.receive_frame("41", 1000.0) == [DisconnectRequested("/")]
    assert not conn.closed
    assert conn.namespaces == frozenset()
    # test suite: the next frame the client sees is a ping
    assert conn.tick(1000.3) == []
    assert conn.data_to_send() == ["2"]
    # it may connect again
    assert conn.receive_frame("40", 1000.31) == [ConnectRequested("/", {})]


def test_connect_then_disconnect_custom_namespace_like_test_suite() -> None:
    conn = connected()
    assert conn.receive_frame("40/custom", 1000.0) == [ConnectRequested("/custom", {})]
    conn.accept("/custom", "C")
    conn.send_event("/custom", "auth", [{}])
    assert conn.data_to_send() == ['40/custom,{"sid":"C"}', '42/custom,["auth",{}]']
    assert conn.receive_frame("41/custom", 1000.0) == [DisconnectRequested("/custom")]
    events = conn.receive_frame('42["message","message to main namespace"]', 1000.0)
    assert events == [EventReceived("/", "message", ["message to main namespace"], None)]
    conn.send_event("/", "message-back", ["message to main namespace"])
    assert conn.data_to_send() == ['42["message-back","message to main namespace"]']
    assert conn.namespaces == {"/"}


def test_connect_twice_is_a_protocol_error() -> None:
    conn = connected()
    assert conn.receive_frame("40", 1000.0) == [Closed("namespace already connected", True)]
    assert conn.closed
    conn = new()
    conn.receive_frame("40/a,", 1000.0)
    assert conn.receive_frame('40/a,{"x":1}', 1000.0) == [
        Closed("namespace connection pending", True)
    ]


def test_packets_for_unconnected_namespace_are_ignored() -> None:
    conn = connected()
    assert conn.receive_frame('42/other,["x"]', 1000.0) == []
    assert conn.receive_frame("43/other,1[]", 1000.0) == []
    assert conn.receive_frame("41/other,", 1000.0) == []
    conn.receive_frame("40/pending,", 1000.0)
    assert conn.receive_frame('42/pending,["x"]', 1000.0) == []
    assert conn.receive_frame("41/pending,", 1000.0) == []
    assert conn.pending == {"/pending"}
    assert not conn.closed
    assert conn.data_to_send() == []


def test_binary_for_unconnected_namespace_is_consumed_and_ignored() -> None:
    conn = connected()
    assert conn.receive_frame(f'451-/other,["x",{PH0}]', 1000.0) == []
    assert conn.receive_frame(b"\x01", 1000.0) == []
    # the next binary frame would be unexpected: the attachment was consumed
    assert conn.receive_frame('42["y"]', 1000.0) == [EventReceived("/", "y", [], None)]


def test_sending_to_unconnected_namespace_raises() -> None:
    conn = new()
    conn.receive_frame("40", 1000.0)  # pending is not connected
    for action in (
        lambda: conn.send_event("/", "x", []),
        lambda: conn.send_event("/", "x", [], ack_id=1),
        lambda: conn.send_ack("/", 1, []),
        lambda: conn.disconnect("/"),
        lambda: conn.send_event("/nope", "x", []),
    ):
        with pytest.raises(NotConnected) as info:
            action()
        assert info.value.reason == "namespace not connected"
    assert conn.data_to_send() == []


def test_server_disconnect() -> None:
    conn = connected("/chat")
    conn.disconnect("/chat")
    assert conn.data_to_send() == ["41/chat,"]
    assert conn.namespaces == frozenset()
    assert not conn.closed
    with pytest.raises(NotConnected):
        conn.send_event("/chat", "x", [])
    main = connected()
    main.disconnect("/")
    assert main.data_to_send() == ["41"]


def test_too_many_namespaces() -> None:
    conn = new(ConnectionConfig(max_namespaces=2))
    conn.receive_frame("40/a", 1000.0)
    conn.receive_frame("40/b", 1000.0)
    assert conn.receive_frame("40/c", 1000.0) == [Closed("too many namespaces", True)]


# ------------------------------------------------------------------ messages


def test_events_and_acks_from_test_suite() -> None:
    conn = connected()
    assert conn.receive_frame('42["message",1,"2",{"3":[true]}]', 1000.0) == [
        EventReceived("/", "message", [1, "2", {"3": [True]}], None)
    ]
    conn.send_event("/", "message-back", [1, "2", {"3": [True]}])
    assert conn.data_to_send() == ['42["message-back",1,"2",{"3":[true]}]']

    assert conn.receive_frame('42456["message-with-ack",1,"2",{"3":[false]}]', 1000.0) == [
        EventReceived("/", "message-with-ack", [1, "2", {"3": [False]}], 456)
    ]
    conn.send_ack("/", 456, [1, "2", {"3": [False]}])
    assert conn.data_to_send() == ['43456[1,"2",{"3":[false]}]']


def test_binary_event_from_test_suite() -> None:
    conn = connected()
    assert conn.receive_frame(f'452-["message",{PH0},{PH1}]', 1000.0) == []
    assert conn.receive_frame(bytes([1, 2, 3]), 1000.0) == []
    assert conn.receive_frame(bytes([4, 5, 6]), 1000.0) == [
        EventReceived("/", "message", [b"\x01\x02\x03", b"\x04\x05\x06"], None)
    ]
    conn.send_event("/", "message-back", [b"\x01\x02\x03", b"\x04\x05\x06"])
    assert conn.data_to_send() == [
        f'452-["message-back",{PH0},{PH1}]',
        b"\x01\x02\x03",
        b"\x04\x05\x06",
    ]


def test_binary_event_with_ack_from_test_suite() -> None:
    conn = connected()
    assert conn.receive_frame(f'452-789["message-with-ack",{PH0},{PH1}]', 1000.0) == []
    assert conn.receive_frame(bytes([1, 2, 3]), 1000.0) == []
    (event,) = conn.receive_frame(bytes([4, 5, 6]), 1000.0)
    assert event == EventReceived("/", "message-with-ack", [b"\x01\x02\x03", b"\x04\x05\x06"], 789)
    assert isinstance(event, EventReceived)
    conn.send_ack("/", 789, event.args)
    assert conn.data_to_send() == [f"462-789[{PH0},{PH1}]", b"\x01\x02\x03", b"\x04\x05\x06"]


def test_acks_from_client() -> None:
    conn = connected("/nsp")
    assert conn.receive_frame('43/nsp,7["ok"]', 1000.0) == [AckReceived("/nsp", 7, ["ok"])]
    # an id the server never issued is passed through; the app decides
    assert conn.receive_frame("43/nsp,999[]", 1000.0) == [AckReceived("/nsp", 999, [])]
    assert conn.receive_frame(f"461-/nsp,12[{PH0}]", 1000.0) == []
    assert conn.receive_frame(b"bin", 1000.0) == [AckReceived("/nsp", 12, [b"bin"])]


def test_send_event_with_ack_id_and_namespace() -> None:
    conn = connected("/admin")
    conn.send_event("/admin", "tellme", [], ack_id=1)
    conn.send_event("/admin", "hey", ["Jude"])
    assert conn.data_to_send() == ['42/admin,1["tellme"]', '42/admin,["hey","Jude"]']


def test_send_frames_is_passthrough_and_ordered() -> None:
    conn = connected()
    conn.send_event("/", "a", [])
    conn.send_frames(['42["pre","encoded"]', b"\x00"])
    conn.send_event("/", "b", [])
    assert conn.data_to_send() == ['42["a"]', '42["pre","encoded"]', b"\x00", '42["b"]']
    assert conn.data_to_send() == []


def test_unicode_event() -> None:
    conn = connected()
    assert conn.receive_frame('42["ünï",{"emoji":"😀"}]', 1000.0) == [
        EventReceived("/", "ünï", [{"emoji": "😀"}], None)
    ]


# ------------------------------------------------------------------ Engine.IO level


def test_client_ping_is_answered_with_same_data() -> None:
    conn = new()
    assert conn.receive_frame("2probe", 1000.0) == []
    assert conn.receive_frame("2", 1000.0) == []
    assert conn.data_to_send() == ["3probe", "3"]


def test_noop_is_ignored() -> None:
    conn = new()
    assert conn.receive_frame("6", 1000.0) == []
    assert conn.data_to_send() == []
    assert not conn.closed


def test_client_close() -> None:
    conn = connected()
    assert conn.receive_frame("1", 1000.0) == [Closed("client close", False)]
    assert conn.closed
    assert conn.next_deadline() is None
    assert conn.receive_frame('42["x"]', 1000.0) == []
    assert conn.tick(5000.0) == []


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("4abc", "unknown Socket.IO packet type"),
        ("42{}", "EVENT payload must be an array"),
        ('42abc["message-with-ack",1,"2",{"3":[false]}]', "invalid JSON payload"),
        ("42[]", "EVENT payload must not be empty"),
        ("42[1]", "event name must be a string"),
        ('40"str"', "CONNECT payload must be an object"),
        ('45-["x"]', "invalid attachment count"),
        ('44{"message":"x"}', "CONNECT_ERROR from client"),
        ("49", "unknown Socket.IO packet type"),
        ("4", "empty Socket.IO packet"),
        ("", "empty Engine.IO packet"),
        ("0", "unexpected Engine.IO packet from client"),
        ("5", "unexpected Engine.IO packet from client"),
        ("7", "unknown Engine.IO packet type"),
        ("x", "unknown Engine.IO packet type"),
        (b"\x01", "unexpected binary frame"),
    ],
)
def test_bad_input_closes_with_reason(frame: str | bytes, reason: str) -> None:
    conn = connected()
    assert conn.receive_frame(frame, 1000.0) == [Closed(reason, True)]
    assert conn.closed
    assert conn.next_deadline() is None
    # nothing more is accepted and the Closed event is not repeated
    assert conn.receive_frame('42["x"]', 1000.0) == []
    assert conn.receive_frame("1", 1000.0) == []
    assert conn.connection_lost() == []


def test_invalid_handshake_before_connect_closes() -> None:
    conn = new()
    assert conn.receive_frame("4abc", 1000.0) == [Closed("unknown Socket.IO packet type", True)]


def test_text_while_awaiting_attachment_closes() -> None:
    conn = connected()
    conn.receive_frame(f'451-["x",{PH0}]', 1000.0)
    assert conn.receive_frame('42["y"]', 1000.0) == [
        Closed("text packet while awaiting binary attachments", True)
    ]


def test_engineio_ping_while_awaiting_attachment_is_fine() -> None:
    conn = connected()
    conn.receive_frame(f'451-["x",{PH0}]', 1000.0)
    assert conn.receive_frame("3", 1000.0) == []
    assert conn.receive_frame(b"1", 1000.0) == [EventReceived("/", "x", [b"1"], None)]


# ------------------------------------------------------------------ max payload


def test_max_payload_text() -> None:
    config = ConnectionConfig(max_payload=20)
    conn = connected(config=config)
    ok = '42["' + "a" * 14 + '"]'
    assert len(ok) == 20
    assert conn.receive_frame(ok, 1000.0) == [EventReceived("/", "a" * 14, [], None)]
    assert conn.receive_frame(ok + " ", 1000.0) == [Closed("frame too large", True)]


def test_max_payload_counts_utf8_bytes() -> None:
    config = ConnectionConfig(max_payload=20)
    fits = '42["' + "é" * 7 + '"]'  # 6 + 14 bytes
    assert len(fits.encode()) == 20
    assert connected(config=config).receive_frame(fits, 1000.0) == [
        EventReceived("/", "é" * 7, [], None)
    ]
    too_big = '42["' + "é" * 8 + '"]'  # 14 characters, 22 bytes
    assert len(too_big) < 20 < len(too_big.encode())
    assert connected(config=config).receive_frame(too_big, 1000.0) == [
        Closed("frame too large", True)
    ]


def test_max_payload_binary_frame() -> None:
    conn = connected(config=ConnectionConfig(max_payload=100))
    conn.receive_frame(f'451-["x",{PH0}]', 1000.0)
    assert conn.receive_frame(b"\x00" * 101, 1000.0) == [Closed("frame too large", True)]


def test_max_payload_bounds_all_attachments_of_a_packet() -> None:
    conn = connected(config=ConnectionConfig(max_payload=100))
    assert conn.receive_frame(f'452-["x",{PH0},{PH1}]', 1000.0) == []
    assert conn.receive_frame(b"\x00" * 60, 1000.0) == []
    assert conn.receive_frame(b"\x00" * 60, 1000.0) == [
        Closed("binary attachments too large", True)
    ]


def test_max_attachments_from_config() -> None:
    conn = connected(config=ConnectionConfig(max_attachments=1))
    assert conn.receive_frame(f'452-["x",{PH0},{PH1}]', 1000.0) == [
        Closed("too many binary attachments", True)
    ]


# ------------------------------------------------------------------ heartbeat


def test_ping_pong_sequence_like_test_suite() -> None:
    conn = connected()  # created at t=1000
    now = 1000.0
    for _ in range(3):
        deadline = conn.next_deadline()
        assert deadline is not None
        assert deadline == pytest.approx(now + 0.3)
        assert conn.tick(deadline - 0.001) == []
        assert conn.data_to_send() == []
        assert conn.tick(deadline) == []
        assert conn.data_to_send() == ["2"]
        assert conn.next_deadline() == pytest.approx(deadline + 0.2)
        now = deadline + 0.05
        assert conn.receive_frame("3", now) == []
    assert not conn.closed


def test_ping_timeout() -> None:
    conn = connected()
    conn.tick(1000.3)
    assert conn.data_to_send() == ["2"]
    assert conn.tick(1000.49) == []
    assert conn.tick(1000.5) == [Closed("ping timeout", True)]
    assert conn.closed
    assert conn.next_deadline() is None
    assert conn.tick(1001.0) == []
    assert conn.data_to_send() == []


def test_ping_timeout_even_without_namespace_traffic() -> None:
    # test suite: a client that never answers is closed
    conn = Connection("s", SUITE, 0.0)
    assert conn.data_to_send()[0][:1] == "0"
    events: list[Event] = []
    now = 0.0
    while not events:
        deadline = conn.next_deadline()
        assert deadline is not None
        now = deadline
        events = conn.tick(now)
    assert events == [Closed("ping timeout", True)]
    assert now == pytest.approx(0.5)


def test_pong_keeps_alive_for_a_long_time() -> None:
    conn = connected()
    now = 1000.0
    for _ in range(1000):
        now += 0.3
        conn.tick(now)
        assert conn.data_to_send() == ["2"]
        now += 0.19
        assert conn.receive_frame("3", now) == []
    assert not conn.closed


def test_late_tick_sends_ping_late_and_times_out_relative_to_it() -> None:
    conn = connected()
    conn.tick(1005.0)  # the I/O layer woke up late
    assert conn.data_to_send() == ["2"]
    assert conn.next_deadline() == pytest.approx(1005.2)


def test_unsolicited_pong_is_ignored() -> None:
    conn = connected()
    assert conn.receive_frame("3", 1000.1) == []
    assert conn.next_deadline() == pytest.approx(1000.3)
    assert conn.receive_frame("3probe", 1000.2) == []
    assert conn.next_deadline() == pytest.approx(1000.3)


def test_ping_and_event_output_interleave() -> None:
    conn = connected()
    conn.send_event("/", "a", [])
    conn.tick(1000.3)
    conn.send_event("/", "b", [])
    assert conn.data_to_send() == ['42["a"]', "2", '42["b"]']


# ------------------------------------------------------------------ connect timeout


def test_connect_timeout_without_connect() -> None:
    config = ConnectionConfig(ping_interval=10.0, ping_timeout=5.0, connect_timeout=3.0)
    conn = new(config, now=0.0)
    assert conn.next_deadline() == 3.0
    assert conn.tick(2.9) == []
    assert conn.tick(3.0) == [Closed("connect timeout", True)]
    assert conn.closed


def test_connect_timeout_while_only_pending() -> None:
    config = ConnectionConfig(ping_interval=10.0, ping_timeout=5.0, connect_timeout=3.0)
    conn = new(config, now=0.0)
    conn.receive_frame('40{"token":"slow"}', 1.0)
    assert conn.tick(3.0) == [Closed("connect timeout", True)]


def test_connect_timeout_with_default_config_and_pongs() -> None:
    conn = new(ConnectionConfig(), now=0.0)
    assert conn.next_deadline() == 25.0
    conn.tick(25.0)
    assert conn.data_to_send() == ["2"]
    conn.receive_frame("3", 26.0)
    assert conn.next_deadline() == 45.0
    assert conn.tick(45.0) == [Closed("connect timeout", True)]


def test_accept_cancels_connect_timeout_for_good() -> None:
    config = ConnectionConfig(ping_interval=10.0, ping_timeout=5.0, connect_timeout=3.0)
    conn = new(config, now=0.0)
    conn.receive_frame("40", 1.0)
    conn.accept("/", "S")
    assert conn.next_deadline() == 10.0
    conn.receive_frame("41", 2.0)  # leaving the last namespace does not re-arm it
    assert conn.tick(9.0) == []
    assert not conn.closed


def test_refused_connect_still_times_out() -> None:
    config = ConnectionConfig(ping_interval=10.0, ping_timeout=5.0, connect_timeout=3.0)
    conn = new(config, now=0.0)
    conn.receive_frame("40", 1.0)
    conn.refuse("/", "Not authorized")
    assert conn.tick(3.0) == [Closed("connect timeout", True)]


# ------------------------------------------------------------------ closing


def test_server_close_queues_nothing_and_stops_everything() -> None:
    conn = connected()
    conn.send_event("/", "bye", [])
    conn.close("server shutdown")
    assert conn.closed
    assert conn.data_to_send() == ['42["bye"]']  # already queued frames stay
    assert conn.next_deadline() is None
    assert conn.tick(2000.0) == []
    assert conn.receive_frame('42["x"]', 1000.0) == []
    assert conn.connection_lost() == []


def test_actions_after_close_are_noops() -> None:
    conn = new()
    conn.receive_frame("40", 1000.0)
    conn.receive_frame("1", 1000.0)
    conn.accept("/", "S")  # races with the client leaving must not raise
    conn.refuse("/", "x")
    conn.send_event("/", "x", [])
    conn.send_ack("/", 1, [])
    conn.send_frames(["42[]"])
    conn.disconnect("/")
    conn.close("again")
    assert conn.data_to_send() == []


def test_connection_lost() -> None:
    conn = connected()
    assert conn.connection_lost() == [Closed("transport close", False)]
    assert conn.connection_lost("other") == []
    assert conn.closed
    assert connected().connection_lost("transport error") == [Closed("transport error", False)]


def test_namespaces_kept_after_close_for_cleanup() -> None:
    conn = connected("/chat")
    conn.receive_frame("40/other", 1000.0)
    conn.receive_frame("1", 1000.0)
    assert conn.namespaces == {"/chat"}
    assert conn.pending == {"/other"}


def test_events_are_frozen() -> None:
    event = Closed("x", True)
    with pytest.raises(AttributeError):
        event.reason = "y"  # type: ignore[misc]
    assert isinstance(event, Event)


def test_namespace_transition_table_is_explicit() -> None:
    from switchboard.gateway.protocol.connection import NS_TRANSITIONS, NsState, NsStep

    assert NS_TRANSITIONS[(NsState.ABSENT, NsStep.CONNECT)] is NsState.PENDING
    assert NS_TRANSITIONS[(NsState.PENDING, NsStep.ACCEPT)] is NsState.CONNECTED
    assert (NsState.CONNECTED, NsStep.CONNECT) not in NS_TRANSITIONS
    assert (NsState.ABSENT, NsStep.ACCEPT) not in NS_TRANSITIONS
    conn = Connection("s", ConnectionConfig(), 0.0)
    conn.receive_frame("40", 0.0)
    assert conn.state("/") is NsState.PENDING
    conn.accept("/", "s1")
    assert conn.state("/") is NsState.CONNECTED and conn.state("/x") is NsState.ABSENT
