"""Socket.IO v5 encoding: golden frames from the spec and the official test suite."""

from __future__ import annotations

import json
import math

import pytest

from switchboard.gateway.protocol.socketio import (
    Packet,
    PacketType,
    encode_event_frames,
    encode_frames,
)

P = PacketType


def test_type_values_match_spec() -> None:
    assert [(t.name, int(t)) for t in PacketType] == [
        ("CONNECT", 0),
        ("DISCONNECT", 1),
        ("EVENT", 2),
        ("ACK", 3),
        ("CONNECT_ERROR", 4),
        ("BINARY_EVENT", 5),
        ("BINARY_ACK", 6),
    ]


@pytest.mark.parametrize(
    ("packet", "frames"),
    [
        # test suite: plain-text echo, ack, refusal, handshakes
        (
            Packet(P.EVENT, "/", ["message-back", 1, "2", {"3": [True]}]),
            ['42["message-back",1,"2",{"3":[true]}]'],
        ),
        (Packet(P.ACK, "/", [1, "2", {"3": [False]}], 456), ['43456[1,"2",{"3":[false]}]']),
        (
            Packet(P.CONNECT_ERROR, "/random", {"message": "Invalid namespace"}),
            ['44/random,{"message":"Invalid namespace"}'],
        ),
        (Packet(P.CONNECT, "/custom", {"sid": "x"}), ['40/custom,{"sid":"x"}']),
        (Packet(P.CONNECT, "/", {"sid": "x"}), ['40{"sid":"x"}']),
        (Packet(P.DISCONNECT, "/custom"), ["41/custom,"]),
        (Packet(P.DISCONNECT), ["41"]),
        (Packet(P.CONNECT), ["40"]),
        (Packet(P.EVENT, "/", ["auth", {}]), ['42["auth",{}]']),
        (
            Packet(P.EVENT, "/custom", ["auth", {"token": "abc"}]),
            ['42/custom,["auth",{"token":"abc"}]'],
        ),
        (
            Packet(P.EVENT, "/", ["message-back", "message to main namespace"]),
            ['42["message-back","message to main namespace"]'],
        ),
        # spec examples
        (Packet(P.EVENT, "/", ["foo"], 12), ['4212["foo"]']),
        (Packet(P.EVENT, "/admin", ["bar"]), ['42/admin,["bar"]']),
        (Packet(P.ACK, "/admin", ["bar"], 13), ['43/admin,13["bar"]']),
        (Packet(P.ACK, "/", [], 12), ["4312[]"]),
        (
            Packet(P.CONNECT, "/admin", {"sid": "oSO0OpakMV_3jnilAAAA"}),
            ['40/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}'],
        ),
        (
            Packet(P.CONNECT_ERROR, "/", {"message": "Not authorized"}),
            ['44{"message":"Not authorized"}'],
        ),
        (Packet(P.DISCONNECT, "/admin"), ["41/admin,"]),
    ],
)
def test_golden_text_frames(packet: Packet, frames: list[str]) -> None:
    assert encode_frames(packet) == frames
    assert packet.encode() == frames


def test_binary_ack_from_test_suite() -> None:
    frames = encode_frames(Packet(P.ACK, "/", [bytes([1, 2, 3]), bytes([4, 5, 6])], 789))
    assert frames == [
        '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02\x03",
        b"\x04\x05\x06",
    ]


def test_binary_event_from_test_suite() -> None:
    frames = encode_frames(
        Packet(P.EVENT, "/", ["message-back", bytes([1, 2, 3]), bytes([4, 5, 6])])
    )
    assert frames == [
        '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02\x03",
        b"\x04\x05\x06",
    ]


def test_binary_spec_examples() -> None:
    assert encode_frames(Packet(P.EVENT, "/", ["baz", b"\x01\x02\x03\x04"])) == [
        '451-["baz",{"_placeholder":true,"num":0}]',
        b"\x01\x02\x03\x04",
    ]
    assert encode_frames(Packet(P.EVENT, "/admin", ["baz", b"\x01\x02", b"\x03\x04"])) == [
        '452-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02",
        b"\x03\x04",
    ]
    assert encode_frames(Packet(P.ACK, "/", ["bar", b"\x01\x02\x03\x04"], 15)) == [
        '461-15["bar",{"_placeholder":true,"num":0}]',
        b"\x01\x02\x03\x04",
    ]
    # sample session of the spec
    assert encode_frames(Packet(P.ACK, "/admin", [b"\xff"], 1)) == [
        '461-/admin,1[{"_placeholder":true,"num":0}]',
        b"\xff",
    ]


def test_nested_binary_depth_first_and_bytes_like() -> None:
    data = [
        "ev",
        {"a": bytearray(b"A"), "b": [memoryview(b"B"), {"c": b"C"}]},
        (b"D",),
        b"E",
    ]
    frames = encode_frames(Packet(P.EVENT, "/", data))
    ph = '{{"_placeholder":true,"num":{}}}'.format
    assert frames[0] == (
        f'455-["ev",{{"a":{ph(0)},"b":[{ph(1)},{{"c":{ph(2)}}}]}},[{ph(3)}],{ph(4)}]'
    )
    assert frames[1:] == [b"A", b"B", b"C", b"D", b"E"]
    assert all(type(frame) is bytes for frame in frames[1:])
    # the caller's data is not modified
    assert data[1]["a"] == bytearray(b"A")  # type: ignore[index]


def test_explicit_binary_type_without_bytes_keeps_type() -> None:
    assert encode_frames(Packet(P.BINARY_EVENT, "/", ["x"])) == ['450-["x"]']
    assert encode_frames(Packet(P.BINARY_ACK, "/", [], 3)) == ["460-3[]"]


def test_unicode_is_not_escaped() -> None:
    frames = encode_frames(Packet(P.EVENT, "/", ["é", "€", "😀", "\u2028", "日本語"]))
    assert frames == ['42["é","€","😀","\u2028","日本語"]']


def test_control_characters_escaped_like_json_stringify() -> None:
    frames = encode_frames(Packet(P.EVENT, "/", ['a\nb\t\x00\x1f"\\/']))
    assert frames == ['42["a\\nb\\t\\u0000\\u001f\\"\\\\/"]']


def test_lone_surrogates_are_escaped() -> None:
    # JSON.stringify (ES2019) escapes them; raw they would be invalid UTF-8.
    frames = encode_frames(Packet(P.EVENT, "/", ["x\ud800y", "é\udfff"]))
    assert frames == ['42["x\\ud800y","é\\udfff"]']
    frame = frames[0]
    assert isinstance(frame, str)
    frame.encode("utf-8")  # must not raise


def test_event_fast_path_equals_general_encoder() -> None:
    cases: list[tuple[str, str, list[object]]] = [
        ("/", "message", [1, "2", {"3": [True]}]),
        ("/chat", "message", []),
        ("/", "blob", [b"\x00", {"k": [b"\x01"]}]),
        ("/chat", "ü", [None, 1.5, -3]),
    ]
    for namespace, event, args in cases:
        expected = encode_frames(Packet(P.EVENT, namespace, [event, *args]))
        assert encode_event_frames(namespace, event, args) == expected


def test_encode_rejects_programming_errors() -> None:
    with pytest.raises(ValueError):
        encode_frames(Packet(P.EVENT, "/", ["x", math.nan]))
    with pytest.raises(TypeError):
        encode_frames(Packet(P.EVENT, "/", ["x", {1, 2}]))
    with pytest.raises(TypeError):
        encode_event_frames("/", "x", [object()])
    with pytest.raises(ValueError):
        encode_frames(Packet(P.EVENT, "chat", ["x"]))
    with pytest.raises(ValueError):
        encode_event_frames("chat", "x", [])
    with pytest.raises(ValueError):
        encode_frames(Packet(P.EVENT, "/", ["x"], -1))


def test_output_is_valid_json_after_header() -> None:
    frame = encode_frames(Packet(P.ACK, "/a", [{"nested": [1, 2.5, None, "s"]}], 7))[0]
    assert isinstance(frame, str)
    assert frame.startswith("43/a,7")
    assert json.loads(frame[len("43/a,7") :]) == [{"nested": [1, 2.5, None, "s"]}]
