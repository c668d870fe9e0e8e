"""Seeded random input: garbage never raises anything but ProtocolError."""

from __future__ import annotations

import random

import pytest

from switchboard.gateway.protocol.connection import Closed, Connection, ConnectionConfig, Event
from switchboard.gateway.protocol.engineio import EioPacket
from switchboard.gateway.protocol.errors import ProtocolError
from switchboard.gateway.protocol.socketio import Decoder, encode_frames

TOKENS = [
    *"0123456789",
    "-",
    "/",
    ",",
    "[",
    "]",
    "{",
    "}",
    '"',
    ":",
    " ",
    "\\",
    "é",
    "😀",
    "\ud800",
    "\x00",
    "٣",
    "²",
    "true",
    "false",
    "null",
    "NaN",
    "Infinity",
    "1e400",
    "-0",
    "1.5",
    '"_placeholder"',
    '"num"',
    '{"_placeholder":true,"num":0}',
    '{"_placeholder":true,"num":1}',
    '"message"',
    '"connect"',
    "/custom",
    "99999999999999999999",
]

SEEDS = [
    '2["message",1,"2",{"3":[true]}]',
    '2456["message-with-ack",1]',
    '52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
    '52-789["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
    '61-/nsp,12[{"_placeholder":true,"num":0}]',
    '0/custom,{"token":"abc"}',
    "1/custom,",
    "3456[1]",
    "0",
]


def garbage(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "".join(rng.choice(TOKENS) for _ in range(rng.randint(0, 12)))
    text = list(rng.choice(SEEDS))
    for _ in range(rng.randint(1, 4)):
        op = rng.randint(0, 2)
        pos = rng.randint(0, len(text))
        if op == 0 and text:
            del text[min(pos, len(text) - 1)]
        elif op == 1:
            text.insert(pos, rng.choice(TOKENS))
        elif text:
            text[min(pos, len(text) - 1)] = rng.choice(TOKENS)
    return "".join(text)


def random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 8)))


@pytest.mark.parametrize("seed", range(5))
def test_decoder_only_raises_protocol_errors(seed: int) -> None:
    rng = random.Random(seed)
    decoder = Decoder(client=bool(seed % 2))
    for _ in range(2000):
        try:
            if rng.random() < 0.15:
                decoder.feed_binary(random_bytes(rng))
            else:
                packet = decoder.feed_text(garbage(rng))
                if packet is not None:
                    # whatever was accepted can be encoded again
                    encode_frames(packet)
        except ProtocolError as exc:
            assert exc.reason
            decoder = Decoder(client=bool(seed % 2))


@pytest.mark.parametrize("seed", range(3))
def test_engineio_decode_only_raises_protocol_errors(seed: int) -> None:
    rng = random.Random(100 + seed)
    for _ in range(2000):
        frame = garbage(rng) if rng.random() < 0.5 else rng.choice("0123456789ab") + garbage(rng)
        try:
            packet = EioPacket.decode(frame)
        except ProtocolError:
            continue
        assert packet.encode() == frame


@pytest.mark.parametrize("seed", range(5))
def test_connection_never_raises_on_input(seed: int) -> None:
    rng = random.Random(200 + seed)
    config = ConnectionConfig(ping_interval=1.0, ping_timeout=0.5, max_payload=64)
    now = 0.0
    conn = Connection("s", config, now)
    closes = 0
    for _ in range(3000):
        now += rng.random() * 0.3
        roll = rng.random()
        events: list[Event]
        if roll < 0.1:
            events = conn.receive_frame(random_bytes(rng), now)
        elif roll < 0.2:
            events = conn.tick(now)
        elif roll < 0.3:
            events = conn.receive_frame(rng.choice(["3", "40", "40/custom", "2", "6"]), now)
        else:
            events = conn.receive_frame(rng.choice(["4", "", "2", "3"]) + garbage(rng), now)
        # the app answers connection requests at random
        for namespace in conn.pending:
            if rng.random() < 0.5:
                conn.accept(namespace, "x")
            else:
                conn.refuse(namespace, "no")
        for frame in conn.data_to_send():
            assert isinstance(frame, str | bytes)
        closed_events = [event for event in events if isinstance(event, Closed)]
        closes += len(closed_events)
        if conn.closed:
            assert closes == 1
            assert conn.receive_frame('42["x"]', now) == []
            conn = Connection("s", config, now)
            closes = 0
