"""Engine.IO v3 and Socket.IO protocol 4 (socket.io-client 2.x), byte for byte: payload
framing (as engine.io's parser-v3 encodes and decodes it), the reversed heartbeat, the
automatic CONNECT to ``/``, auth in a namespace's query, accept and refusal frames."""

from __future__ import annotations

import pytest

from switchboard.gateway.protocol.connection import (
    Closed,
    Connection,
    ConnectionConfig,
    ConnectRequested,
    EventReceived,
)
from switchboard.gateway.protocol.engineio import decode_payload_v3, encode_payload_v3
from switchboard.gateway.protocol.errors import DecodeError
from switchboard.gateway.protocol.polling import Polling

CONFIG = ConnectionConfig(ping_interval=25.0, ping_timeout=5.0)
T0 = 1000.0


# -- payloads -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("packets", "body"), [
    (["0{\"sid\":\"x\"}"], '12:0{"sid":"x"}'),
    (["40", "3probe"], "2:406:3probe"),
    (["6"], "1:6"),
    ([b"\x01\x02\x03"], "6:b4AQID"),  # binary as base64 (always text payloads from us)
    # Lengths count UTF-16 code units, as JavaScript's String.length does.
    (['42["é"]'], '7:42["é"]'),
    (['42["😀"]'], '8:42["😀"]'),
])
def test_payload_vectors(packets: list[str | bytes], body: str) -> None:
    assert encode_payload_v3(packets) == body
    assert decode_payload_v3(body) == packets


def test_a_binary_payload_from_a_client_that_sends_binary() -> None:
    # parser-v3 encodePayloadAsBinary of ["2", "42[\"a\"]", <MESSAGE 01 02>]: a kind byte
    # (0 text, 1 binary), the length one byte per digit, 255, the packet.
    body = (bytes([0, 1, 255]) + b"2" + bytes([0, 7, 255]) + b'42["a"]'
            + bytes([1, 3, 255]) + b"\x04\x01\x02")
    assert decode_payload_v3(body) == ["2", '42["a"]', b"\x01\x02"]
    # Text in a binary payload is UTF-8; twelve bytes here.
    assert decode_payload_v3(bytes([0, 1, 2, 255]) + '42["é😀"]'.encode()) == ['42["é😀"]']


@pytest.mark.parametrize("body", [
    "", ":", "x:4", "3:40", "2:b1", "4:b4!!", "1234567890:4",
    "2:4😀", "9:42[\"😀\"",  # a length that splits a character; one past the end
    bytes([2, 1, 255]) + b"2", bytes([0, 1]) + b"2", bytes([1, 1, 255]) + b"\x02",
])
def test_malformed_payloads_are_decode_errors(body: str | bytes) -> None:
    with pytest.raises(DecodeError):
        decode_payload_v3(body)


def test_polling_frames_v3_payloads() -> None:
    polling = Polling(eio=3)
    polling.send(["0{}", "40"])
    assert polling.get() == "3:0{}2:40"
    assert polling.get() is None
    assert polling.client_closed() == "1:6"


# -- the connection --------------------------------------------------------------------------

def v3(now: float = T0) -> Connection:
    conn = Connection("eio-sid", CONFIG, now, ("websocket",), eio=3)
    opened = conn.data_to_send()[0]
    assert isinstance(opened, str)
    assert opened.startswith('0{"sid":"eio-sid","upgrades":["websocket"]')
    return conn


def test_the_client_is_connected_to_slash_with_its_query_as_auth() -> None:
    conn = v3()
    assert conn.start({"token": "t"}) == [ConnectRequested("/", {"token": "t"})]
    assert conn.start({"token": "t"}) == []  # once
    conn.accept("/", "sio-sid")
    assert conn.data_to_send() == ["40"]  # no payload, no sid (v2 derives its id)


def test_a_namespace_connect_carries_auth_in_its_query() -> None:
    conn = v3()
    conn.start()
    assert conn.receive_frame("40/chat?token=abc&x=%20y,", T0) == [
        ConnectRequested("/chat", {"token": "abc", "x": " y"})]
    conn.accept("/chat", "sio-sid")
    assert conn.data_to_send() == ["40/chat,"]
    assert conn.receive_frame('42/chat,["hi",1]', T0) == [EventReceived("/chat", "hi", [1], None)]


def test_a_refusal_is_a_plain_string() -> None:
    conn = v3()
    conn.start()
    conn.refuse("/", "Authentication error: No token provided")
    assert conn.data_to_send() == ['44"Authentication error: No token provided"']
    conn.receive_frame("40/chat,", T0)
    conn.refuse("/chat", "nope", data={"code": 7})  # Node: err.data || err.message
    assert conn.data_to_send() == ['44/chat,{"code":7}']


def test_v4_is_unchanged() -> None:
    conn = Connection("eio-sid", CONFIG, T0)
    conn.data_to_send()
    assert conn.start({"token": "t"}) == []
    conn.receive_frame("40", T0)
    conn.accept("/", "sio-sid")
    assert conn.data_to_send() == ['40{"sid":"sio-sid"}']


def test_the_client_pings_and_the_server_answers() -> None:
    conn = v3()
    conn.start()
    conn.accept("/", "sio-sid")  # no connect timeout from here on
    conn.data_to_send()
    # The server never pings a v3 client...
    assert conn.tick(T0 + 26) == [] and conn.data_to_send() == []
    assert conn.receive_frame("2", T0 + 26) == []
    assert conn.data_to_send() == ["3"]
    assert conn.receive_frame("2probe", T0 + 27) == []
    assert conn.data_to_send() == ["3probe"]
    # ...and drops one silent for pingInterval + pingTimeout since its last ping.
    assert conn.next_deadline() == T0 + 27 + 30
    assert conn.tick(T0 + 27 + 29.9) == []
    assert conn.tick(T0 + 27 + 30) == [Closed("ping timeout", True)]


def test_a_silent_v3_client_times_out() -> None:
    conn = v3()
    assert conn.tick(T0 + 30) == [Closed("ping timeout", True)]
