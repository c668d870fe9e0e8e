"""Envelopes on the wire: round trips, version tolerance and malformed input."""

from __future__ import annotations

import msgpack
import pytest

from switchboard.shared.envelope import (
    Emit,
    GatewayStatus,
    PubKind,
    Publication,
    Reply,
    Request,
    RequestKind,
    Session,
    SocketState,
)
from switchboard.shared.errors import EnvelopeError


def test_request_round_trip_with_nested_envelopes_and_binary() -> None:
    session = Session("gw1.abc", "/", "gw1", "10.0.0.1", "u1", "alice", "user", 12.5)
    request = Request(
        RequestKind.SYNC, 7, "gw1", session, "ev", [1, b"\x00\xff", {"k": "v"}],
        {"token": "t"}, {"origin": "o"}, (SocketState(session, ("r1", "r2")),), 99.0,
        GatewayStatus(1.0, {"/": 2}, "h:1"), "inst",
    )
    decoded = Request.decode(request.encode())
    assert decoded == request
    assert isinstance(decoded.kind, RequestKind) and isinstance(decoded.sockets, tuple)


def test_reply_and_publication_round_trip() -> None:
    reply = Reply(3, ok=False, error="no", emits=(Emit("e", [1], "ack"),), joins=("a",))
    assert Reply.decode(reply.encode()) == reply
    pub = Publication(PubKind.EMIT, "/", "ev", [b"bin"], room="r", exclude=("s1",))
    assert Publication.decode(pub.encode()) == pub


def test_an_older_peer_leaves_fields_out_and_a_newer_one_adds_some() -> None:
    """Fields are appended only: missing ones take their defaults, unknown trailing ones are
    ignored (rolling upgrades)."""
    old = msgpack.packb([int(RequestKind.HEARTBEAT), 1, "gw1"])
    assert Request.decode(old) == Request(RequestKind.HEARTBEAT, 1, "gw1")
    newer = [*Request(RequestKind.HEARTBEAT, 2, "gw1", instance="i").to_list(), "future", 1]
    assert Request.decode(msgpack.packb(newer)).instance == "i"


@pytest.mark.parametrize("body", [
    b"\xc1",  # never-used msgpack byte
    msgpack.packb({"kind": 1}),  # a map, not an array
    msgpack.packb([99, 1]),  # unknown request kind
    msgpack.packb([1, 1, "gw", ["too", "short"]]),  # a session without its fields
])
def test_malformed_envelopes_raise_envelope_error(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        Request.decode(body)
