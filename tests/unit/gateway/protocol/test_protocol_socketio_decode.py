"""Socket.IO v5 decoding: accepted/rejected payloads, binary reconstruction, limits."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.gateway.protocol.errors import (
    DecodeError,
    PayloadTooLarge,
    ProtocolError,
    UnexpectedBinary,
)
from switchboard.gateway.protocol.socketio import Decoder, Packet, PacketType, encode_frames

P = PacketType
PH0 = '{"_placeholder":true,"num":0}'
PH1 = '{"_placeholder":true,"num":1}'


def decode_all(frames: list[str | bytes], *, client: bool = False) -> Packet:
    """Decode the frames of one packet (text frame with its Engine.IO "4")."""
    decoder = Decoder(client=client)
    text, *attachments = frames
    assert isinstance(text, str) and text.startswith("4")
    result = decoder.feed_text(text[1:])
    for index, attachment in enumerate(attachments):
        assert result is None
        assert isinstance(attachment, bytes)
        assert decoder.awaiting == len(attachments) - index
        result = decoder.feed_binary(attachment)
    assert result is not None
    assert decoder.awaiting == 0
    return result


# ------------------------------------------------------------------ accepted


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("0", Packet(P.CONNECT)),
        ('0{"token":"123"}', Packet(P.CONNECT, "/", {"token": "123"})),
        ("0/custom,", Packet(P.CONNECT, "/custom")),
        ('0/custom,{"token":"abc"}', Packet(P.CONNECT, "/custom", {"token": "abc"})),
        ("0/random", Packet(P.CONNECT, "/random")),
        ("0/custom", Packet(P.CONNECT, "/custom")),
        ("1", Packet(P.DISCONNECT)),
        ("1/custom", Packet(P.DISCONNECT, "/custom")),
        ("1/custom,", Packet(P.DISCONNECT, "/custom")),
        (
            '2["message",1,"2",{"3":[true]}]',
            Packet(P.EVENT, "/", ["message", 1, "2", {"3": [True]}]),
        ),
        (
            '2["message","message to main namespace"]',
            Packet(P.EVENT, "/", ["message", "message to main namespace"]),
        ),
        ('2456["message-with-ack",1]', Packet(P.EVENT, "/", ["message-with-ack", 1], 456)),
        (
            '2456["message-with-ack",1,"2",{"3":[false]}]',
            Packet(P.EVENT, "/", ["message-with-ack", 1, "2", {"3": [False]}], 456),
        ),
        ('2/admin,["bar"]', Packet(P.EVENT, "/admin", ["bar"])),
        ('2/admin,12["bar"]', Packet(P.EVENT, "/admin", ["bar"], 12)),
        ('212["foo"]', Packet(P.EVENT, "/", ["foo"], 12)),
        ('20["foo"]', Packet(P.EVENT, "/", ["foo"], 0)),
        ('2["x"]', Packet(P.EVENT, "/", ["x"])),
        ("3456[1]", Packet(P.ACK, "/", [1], 456)),
        ("312[]", Packet(P.ACK, "/", [], 12)),
        ('3/admin,13["bar"]', Packet(P.ACK, "/admin", ["bar"], 13)),
        ('2["é€😀",{"日本":"語"}]', Packet(P.EVENT, "/", ["é€😀", {"日本": "語"}])),
        ('2["\\u00e9\\ud83d\\ude00"]', Packet(P.EVENT, "/", ["é😀"])),
        ('2/é,["x"]', Packet(P.EVENT, "/é", ["x"])),
        ('2 ["x"] ', Packet(P.EVENT, "/", ["x"])),  # JSON.parse allows whitespace too
        ('2["x",null,1.5,-0.25,1e3]', Packet(P.EVENT, "/", ["x", None, 1.5, -0.25, 1000.0])),
        # a non-binary packet may carry a look-alike object; it is plain data
        (f'2["x",{PH0}]', Packet(P.EVENT, "/", ["x", {"_placeholder": True, "num": 0}])),
    ],
)
def test_accepted(payload: str, expected: Packet) -> None:
    assert Decoder().feed_text(payload) == expected


def test_binary_event_from_test_suite() -> None:
    decoder = Decoder()
    assert decoder.feed_text(f'52-["message",{PH0},{PH1}]') is None
    assert decoder.awaiting == 2
    assert decoder.feed_binary(bytes([1, 2, 3])) is None
    assert decoder.awaiting == 1
    packet = decoder.feed_binary(bytes([4, 5, 6]))
    assert packet == Packet(P.BINARY_EVENT, "/", ["message", b"\x01\x02\x03", b"\x04\x05\x06"])
    assert decoder.awaiting == 0


def test_binary_event_with_ack_from_test_suite() -> None:
    decoder = Decoder()
    assert decoder.feed_text(f'52-789["message-with-ack",{PH0},{PH1}]') is None
    assert decoder.feed_binary(b"\x01\x02\x03") is None
    packet = decoder.feed_binary(b"\x04\x05\x06")
    assert packet == Packet(
        P.BINARY_EVENT, "/", ["message-with-ack", b"\x01\x02\x03", b"\x04\x05\x06"], 789
    )


def test_binary_ack_with_namespace() -> None:
    # Spec order: <type><attachments>-<namespace>,<id><json>
    decoder = Decoder()
    assert decoder.feed_text(f"61-/nsp,12[{PH0}]") is None
    assert decoder.feed_binary(b"xyz") == Packet(P.BINARY_ACK, "/nsp", [b"xyz"], 12)


def test_placeholders_in_any_order_and_nested() -> None:
    decoder = Decoder()
    payload = (
        '53-/chat,7["ev",{"a":{"_placeholder":true,"num":2},'
        '"b":[[{"_placeholder":true,"num":0}],{"c":{"_placeholder":true,"num":1}}]}]'
    )
    assert decoder.feed_text(payload) is None
    assert decoder.feed_binary(b"zero") is None
    assert decoder.feed_binary(b"one") is None
    packet = decoder.feed_binary(b"two")
    assert packet == Packet(
        P.BINARY_EVENT, "/chat", ["ev", {"a": b"two", "b": [[b"zero"], {"c": b"one"}]}], 7
    )


def test_binary_with_zero_attachments_is_complete_immediately() -> None:
    assert Decoder().feed_text('50-["x"]') == Packet(P.BINARY_EVENT, "/", ["x"])


def test_decoder_is_reusable_after_binary_packet() -> None:
    decoder = Decoder()
    assert decoder.feed_text(f'51-["a",{PH0}]') is None
    assert decoder.feed_binary(b"1") is not None
    assert decoder.feed_text('2["b"]') == Packet(P.EVENT, "/", ["b"])
    assert decoder.feed_text(f'51-["c",{PH0}]') is None
    assert decoder.feed_binary(bytearray(b"2")) == Packet(P.BINARY_EVENT, "/", ["c", b"2"])


def test_connect_error_only_accepted_on_client_side() -> None:
    decoder = Decoder(client=True)
    assert decoder.feed_text('4{"message":"Not authorized"}') == Packet(
        P.CONNECT_ERROR, "/", {"message": "Not authorized"}
    )
    assert decoder.feed_text('4/random,{"message":"Invalid namespace","data":{"x":1}}') == (
        Packet(P.CONNECT_ERROR, "/random", {"message": "Invalid namespace", "data": {"x": 1}})
    )
    assert decoder.feed_text('4"legacy"') == Packet(P.CONNECT_ERROR, "/", "legacy")
    with pytest.raises(DecodeError) as info:
        Decoder().feed_text('4{"message":"x"}')
    assert info.value.reason == "CONNECT_ERROR from client"


def test_numbers_behave_like_javascript() -> None:
    packet = Decoder().feed_text('2["n",9007199254740992,9007199254740993000,123456789012345]')
    assert packet is not None
    _, exact, big, small = packet.data
    assert exact == 2**53 and type(exact) is int
    assert type(big) is float
    assert small == 123456789012345 and type(small) is int


# ------------------------------------------------------------------ round trips


ROUND_TRIPS: list[tuple[Packet, Packet]] = [
    (Packet(P.CONNECT), Packet(P.CONNECT)),
    (Packet(P.CONNECT, "/custom"), Packet(P.CONNECT, "/custom")),
    (Packet(P.CONNECT, "/a", {"sid": "s"}), Packet(P.CONNECT, "/a", {"sid": "s"})),
    (Packet(P.DISCONNECT, "/a"), Packet(P.DISCONNECT, "/a")),
    (
        Packet(P.EVENT, "/", ["e", 1, "2", {"3": [True]}]),
        Packet(P.EVENT, "/", ["e", 1, "2", {"3": [True]}]),
    ),
    (Packet(P.EVENT, "/x", ["e"], 99), Packet(P.EVENT, "/x", ["e"], 99)),
    (Packet(P.ACK, "/x", [], 0), Packet(P.ACK, "/x", [], 0)),
    (Packet(P.EVENT, "/", ["ü", "😀", "\u2028"]), Packet(P.EVENT, "/", ["ü", "😀", "\u2028"])),
    (
        Packet(P.EVENT, "/b", ["bin", b"\x00", {"k": [b"\x01", bytearray(b"\x02")]}], 5),
        Packet(P.BINARY_EVENT, "/b", ["bin", b"\x00", {"k": [b"\x01", b"\x02"]}], 5),
    ),
    (
        Packet(P.ACK, "/", [b"", b"\xff" * 10], 123456789012345),
        Packet(P.BINARY_ACK, "/", [b"", b"\xff" * 10], 123456789012345),
    ),
    (
        Packet(P.CONNECT_ERROR, "/n", {"message": "no", "data": {"code": 4}}),
        Packet(P.CONNECT_ERROR, "/n", {"message": "no", "data": {"code": 4}}),
    ),
]


@pytest.mark.parametrize(("sent", "received"), ROUND_TRIPS)
def test_round_trip(sent: Packet, received: Packet) -> None:
    frames = encode_frames(sent)
    assert decode_all(frames, client=True) == received
    # and decoding then re-encoding yields the same frames
    assert encode_frames(received) == frames


def test_round_trip_lone_surrogate() -> None:
    sent = Packet(P.EVENT, "/", ["x\ud800"])
    assert decode_all(encode_frames(sent)) == sent


# ------------------------------------------------------------------ rejected


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("", "empty Socket.IO packet"),
        ("abc", "unknown Socket.IO packet type"),  # "4abc" on the wire
        ("9", "unknown Socket.IO packet type"),
        ("7[]", "unknown Socket.IO packet type"),
        ("٢[]", "unknown Socket.IO packet type"),
        ("{}", "unknown Socket.IO packet type"),
        ("2{}", "EVENT payload must be an array"),
        ('2abc["message-with-ack",1]', "invalid JSON payload"),
        ('2abc["message-with-ack",1,"2",{"3":[false]}]', "invalid JSON payload"),
        ("2[]", "EVENT payload must not be empty"),
        ("2[1]", "event name must be a string"),
        ("2[null]", "event name must be a string"),
        ('2[["x"]]', "event name must be a string"),
        ("2", "EVENT payload must be an array"),
        ("2/a,", "EVENT payload must be an array"),
        ("2null", "EVENT payload must be an array"),
        ('2"x"', "EVENT payload must be an array"),
        ('2["connect"]', "reserved event name"),
        ('2["disconnecting"]', "reserved event name"),
        ('2["removeListener"]', "reserved event name"),
        ('2["x"', "invalid JSON payload"),
        ('2["x"]]', "invalid JSON payload"),
        ('2["x",NaN]', "invalid JSON payload"),
        ('2["x",Infinity]', "invalid JSON payload"),
        ('2["x",-Infinity]', "invalid JSON payload"),
        ('2["x",1e400]', "invalid JSON payload"),
        ('2["x",' + "9" * 400 + "]", "invalid JSON payload"),
        ("2['x']", "invalid JSON payload"),
        ('21234567890123456["x"]', "ack id too long"),
        ('2٣["x"]', "invalid JSON payload"),  # non-ASCII digit is not an id
        ('0"str"', "CONNECT payload must be an object"),
        ("0[]", "CONNECT payload must be an object"),
        ("0null", "CONNECT payload must be an object"),
        ("01", "unexpected ack id"),
        ('0/custom,{"token":', "invalid JSON payload"),
        ("1{}", "DISCONNECT must not have a payload"),
        ("1/custom,null", "DISCONNECT must not have a payload"),
        ("112", "unexpected ack id"),
        ("3[1]", "ACK without ack id"),
        ("3/a,[1]", "ACK without ack id"),
        ("31{}", "ACK payload must be an array"),
        ("31", "ACK payload must be an array"),
        ('5-["x"]', "invalid attachment count"),
        ('5["x"]', "missing attachment count"),
        ('5a-["x"]', "invalid attachment count"),
        ('5 1-["x"]', "invalid attachment count"),
        ('5²-["x"]', "invalid attachment count"),
        ('51["a-b"]', "invalid attachment count"),
        ('51-{"x":1}', "EVENT payload must be an array"),
        ('61-[{"_placeholder":true,"num":0}]', "ACK without ack id"),
        # namespace must come after the attachment count (spec order)
        ('6/nsp,1-12[{"_placeholder":true,"num":0}]', "invalid attachment count"),
        ('4{"message":"x"}', "CONNECT_ERROR from client"),
    ],
)
def test_rejected(payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        Decoder().feed_text(payload)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ('51-["x"]', "unreferenced binary attachment"),
        (f'52-["x",{PH0}]', "unreferenced binary attachment"),
        (f'51-["x",{PH1}]', "invalid attachment placeholder"),
        (f'50-["x",{PH0}]', "invalid attachment placeholder"),
        (f'52-["x",{PH0},{PH0}]', "duplicate attachment placeholder"),
        ('51-["x",{"_placeholder":true,"num":-1}]', "invalid attachment placeholder"),
        ('51-["x",{"_placeholder":true,"num":"0"}]', "invalid attachment placeholder"),
        ('51-["x",{"_placeholder":true,"num":0.0}]', "invalid attachment placeholder"),
        ('51-["x",{"_placeholder":true,"num":true}]', "invalid attachment placeholder"),
        ('51-["x",{"_placeholder":true}]', "invalid attachment placeholder"),
        ('51-["x",{"_placeholder":true,"num":0,"extra":1}]', "invalid attachment placeholder"),
        ('51-[{"_placeholder":true,"num":0}]', "event name must be a string"),
    ],
)
def test_rejected_placeholders(payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        Decoder().feed_text(payload)
    assert info.value.reason == reason


def test_placeholder_lookalike_with_false_flag_is_data() -> None:
    decoder = Decoder()
    assert decoder.feed_text(f'51-["x",{{"_placeholder":false,"num":0}},{PH0}]') is None
    assert decoder.feed_binary(b"!") == Packet(
        P.BINARY_EVENT, "/", ["x", {"_placeholder": False, "num": 0}, b"!"]
    )


def test_unexpected_binary() -> None:
    with pytest.raises(UnexpectedBinary) as info:
        Decoder().feed_binary(b"\x01")
    assert info.value.reason == "unexpected binary frame"
    decoder = Decoder()
    decoder.feed_text(f'51-["x",{PH0}]')
    decoder.feed_binary(b"1")
    with pytest.raises(UnexpectedBinary):
        decoder.feed_binary(b"2")


def test_text_while_awaiting_attachments() -> None:
    decoder = Decoder()
    assert decoder.feed_text(f'52-["x",{PH0},{PH1}]') is None
    decoder.feed_binary(b"1")
    with pytest.raises(DecodeError) as info:
        decoder.feed_text('2["y"]')
    assert info.value.reason == "text packet while awaiting binary attachments"


def test_too_many_attachments() -> None:
    placeholders = ",".join(f'{{"_placeholder":true,"num":{i}}}' for i in range(17))
    with pytest.raises(PayloadTooLarge) as info:
        Decoder().feed_text(f'517-["x",{placeholders}]')
    assert info.value.reason == "too many binary attachments"
    with pytest.raises(PayloadTooLarge):
        Decoder(max_attachments=1).feed_text(f'52-["x",{PH0},{PH1}]')
    with pytest.raises(PayloadTooLarge):
        Decoder().feed_text('59999999999-["x"]')
    assert Decoder(max_attachments=17).feed_text(f'517-["x",{placeholders}]') is None


def test_buffered_attachment_limit() -> None:
    decoder = Decoder(max_buffered=10)
    assert decoder.feed_text(f'52-["x",{PH0},{PH1}]') is None
    assert decoder.feed_binary(b"12345") is None
    with pytest.raises(PayloadTooLarge) as info:
        decoder.feed_binary(b"123456")
    assert info.value.reason == "binary attachments too large"
    assert decoder.awaiting == 0  # state dropped
    exact = Decoder(max_buffered=10)
    exact.feed_text(f'52-["x",{PH0},{PH1}]')
    exact.feed_binary(b"12345")
    assert exact.feed_binary(b"67890") is not None


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_nesting_is_a_decode_error(opener: str) -> None:
    payload = '2["x",' + opener * 200_000
    with pytest.raises(DecodeError) as info:
        Decoder().feed_text(payload)
    assert info.value.reason in ("JSON payload nested too deeply", "invalid JSON payload")
    closed = '2["x",' + "[" * 100_000 + "]" * 100_000 + "]"
    with pytest.raises(DecodeError) as info:
        Decoder().feed_text(closed)
    assert info.value.reason == "JSON payload nested too deeply"


def test_moderately_deep_binary_packet_is_fine() -> None:
    depth = 500
    payload = '51-["x",' + "[" * depth + PH0 + "]" * depth + "]"
    decoder = Decoder()
    assert decoder.feed_text(payload) is None
    packet = decoder.feed_binary(b"deep")
    assert packet is not None
    node: Any = packet.data[1]
    for _ in range(depth - 1):
        node = node[0]
    assert node == [b"deep"]


def test_all_errors_are_protocol_errors() -> None:
    for exc in (DecodeError(), PayloadTooLarge(), UnexpectedBinary()):
        assert isinstance(exc, ProtocolError)
        assert exc.reason and str(exc) == exc.reason
