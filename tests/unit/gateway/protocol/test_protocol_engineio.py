"""Engine.IO v4 packets and the OPEN handshake."""

from __future__ import annotations

import json

import pytest

from switchboard.gateway.protocol.engineio import EioPacket, EioType, encode_open
from switchboard.gateway.protocol.errors import DecodeError, ProtocolError


def test_type_values_match_spec() -> None:
    assert [(t.name, int(t)) for t in EioType] == [
        ("OPEN", 0),
        ("CLOSE", 1),
        ("PING", 2),
        ("PONG", 3),
        ("MESSAGE", 4),
        ("UPGRADE", 5),
        ("NOOP", 6),
    ]


def test_encode_open_exact_bytes() -> None:
    assert (
        encode_open("abc", 300, 200, 1_000_000)
        == '0{"sid":"abc","upgrades":[],"pingInterval":300,"pingTimeout":200,'
        '"maxPayload":1000000}'
    )


def test_encode_open_matches_test_suite_expectations() -> None:
    frame = encode_open("lv_VI97HAXpY6yYWAAAC", 25000, 20000, 1_000_000)
    assert frame.startswith("0")
    value = json.loads(frame[1:])
    assert list(value) == ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]
    assert value["upgrades"] == []
    assert isinstance(value["sid"], str)


def test_encode_open_escapes_sid_as_json() -> None:
    assert encode_open('a"b', 1, 2, 3) == (
        '0{"sid":"a\\"b","upgrades":[],"pingInterval":1,"pingTimeout":2,"maxPayload":3}'
    )


@pytest.mark.parametrize(
    ("packet", "frame"),
    [
        (EioPacket(EioType.PING), "2"),
        (EioPacket(EioType.PONG), "3"),
        (EioPacket(EioType.PING, "probe"), "2probe"),
        (EioPacket(EioType.PONG, "probe"), "3probe"),
        (EioPacket(EioType.CLOSE), "1"),
        (EioPacket(EioType.UPGRADE), "5"),
        (EioPacket(EioType.NOOP), "6"),
        (EioPacket(EioType.MESSAGE, "hello"), "4hello"),
        (EioPacket(EioType.MESSAGE, '2["foo"]'), '42["foo"]'),
        (EioPacket(EioType.MESSAGE, "é€😀"), "4é€😀"),
        (EioPacket(EioType.MESSAGE, b"\x01\x02\x03"), b"\x01\x02\x03"),
    ],
)
def test_encode_decode_round_trip(packet: EioPacket, frame: str | bytes) -> None:
    assert packet.encode() == frame
    assert EioPacket.decode(frame) == packet


def test_binary_message_has_no_prefix() -> None:
    assert EioPacket(EioType.MESSAGE, b"").encode() == b""
    assert EioPacket.decode(b"") == EioPacket(EioType.MESSAGE, b"")
    assert EioPacket.decode(bytearray(b"\x04")) == EioPacket(EioType.MESSAGE, b"\x04")


def test_empty_text_message_keeps_str_data() -> None:
    assert EioPacket.decode("4") == EioPacket(EioType.MESSAGE, "")
    assert EioPacket(EioType.MESSAGE).encode() == "4"


def test_binary_data_only_for_message() -> None:
    with pytest.raises(ValueError):
        EioPacket(EioType.PING, b"x").encode()


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("", "empty Engine.IO packet"),
        ("7", "unknown Engine.IO packet type"),
        ("9hello", "unknown Engine.IO packet type"),
        ("a", "unknown Engine.IO packet type"),
        ("٤x", "unknown Engine.IO packet type"),  # Arabic-Indic four is no digit here
        ("b4AQID", "unknown Engine.IO packet type"),  # base64 is long-polling only
    ],
)
def test_decode_rejects(frame: str, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        EioPacket.decode(frame)
    assert info.value.reason == reason
    assert isinstance(info.value, ProtocolError)
