"""Cross-check against python-socketio's parser (a test dependency), both directions."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.gateway.protocol.socketio import Decoder, Packet, PacketType, encode_frames

sio_packet: Any = pytest.importorskip("socketio.packet")

CASES: list[tuple[int, str, Any, int | None]] = [
    (PacketType.CONNECT, "/", None, None),
    (PacketType.CONNECT, "/admin", {"sid": "abc"}, None),
    (PacketType.DISCONNECT, "/admin", None, None),
    (PacketType.EVENT, "/", ["message", 1, "2", {"3": [True]}], None),
    (PacketType.EVENT, "/chat", ["ünï", "😀", None, 2.5], 42),
    (PacketType.ACK, "/", [1, "2", {"3": [False]}], 456),
    (PacketType.EVENT, "/", ["bin", b"\x01\x02\x03", {"nested": [b"\x04", b""]}], 789),
    (PacketType.ACK, "/nsp", [b"\xff" * 3], 12),
    (PacketType.CONNECT_ERROR, "/random", {"message": "Invalid namespace"}, None),
]


@pytest.mark.parametrize(("ptype", "namespace", "data", "ack_id"), CASES)
def test_python_socketio_decodes_our_frames(
    ptype: int, namespace: str, data: Any, ack_id: int | None
) -> None:
    text, *attachments = encode_frames(Packet(PacketType(ptype), namespace, data, ack_id))
    assert isinstance(text, str) and text[0] == "4"
    theirs = sio_packet.Packet(encoded_packet=text[1:])
    for attachment in attachments:
        theirs.add_attachment(attachment)
    assert theirs.data == data
    assert (theirs.namespace or "/") == namespace
    assert theirs.id == ack_id


@pytest.mark.parametrize(("ptype", "namespace", "data", "ack_id"), CASES)
def test_we_decode_python_socketio_frames(
    ptype: int, namespace: str, data: Any, ack_id: int | None
) -> None:
    encoded = sio_packet.Packet(ptype, data=data, namespace=namespace, id=ack_id).encode()
    text, *attachments = encoded if isinstance(encoded, list) else [encoded]
    decoder = Decoder(client=True)
    packet = decoder.feed_text(text)
    for attachment in attachments:
        assert packet is None
        packet = decoder.feed_binary(attachment)
    assert packet is not None
    assert packet.data == data
    assert packet.namespace == namespace
    assert packet.id == ack_id
    has_binary = bool(attachments)
    expected = PacketType(ptype)
    if has_binary:
        expected = PacketType.BINARY_EVENT if ptype == PacketType.EVENT else PacketType.BINARY_ACK
    assert packet.type is expected
