"""Engine.IO v4 packets and long-polling payloads.

Layout of one WebSocket message (one Engine.IO packet per frame)::

    text frame:    <type digit>[<data>]      e.g. "2", "2probe", "42[\"x\"]"
    binary frame:  <raw bytes>               always a MESSAGE, no type prefix

Types: OPEN=0 CLOSE=1 PING=2 PONG=3 MESSAGE=4 UPGRADE=5 NOOP=6.

Over HTTP long-polling several packets travel in one body (a *payload*), joined by the
record separator ``\x1e``; a binary MESSAGE is ``b`` + its base64 (no type digit)::

    4hello\x1ebAQIDBA==\x1e2

The OPEN packet is sent by the server first (the first frame, or the handshake GET's
body); ``upgrades`` lists ``websocket`` only for a session opened by polling::

    0{"sid":"…","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from .errors import DecodeError

__all__ = [
    "RECORD_SEPARATOR",
    "EioPacket",
    "EioType",
    "decode_payload",
    "encode_open",
    "encode_payload",
    "packet_type",
]

#: Joins the packets of a long-polling payload.
RECORD_SEPARATOR = "\x1e"


class EioType(IntEnum):
    """Engine.IO packet types (the leading digit of a text frame)."""

    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


# Lookup by character is faster than int() + range check and rejects
# non-ASCII digits such as "٤" that str.isdigit() would accept.
_TYPE_BY_CHAR: dict[str, EioType] = {str(int(t)): t for t in EioType}



def packet_type(frame: str) -> EioType:
    """The type of a text packet (its first character); the one place that reads it.

    Raises :class:`DecodeError` for an empty packet or an unknown type.
    """
    if not frame:
        raise DecodeError("empty Engine.IO packet")
    ptype = _TYPE_BY_CHAR.get(frame[0])
    if ptype is None:
        raise DecodeError("unknown Engine.IO packet type")
    return ptype


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class EioPacket:
    """One Engine.IO packet.

    ``data`` is ``None`` when the packet carries nothing, a ``str`` for text payloads
    and ``bytes`` only for a binary MESSAGE.  A text MESSAGE always has ``str`` data
    (possibly empty) after :meth:`decode`.
    """

    type: EioType
    data: str | bytes | None = None

    def encode(self) -> str | bytes:
        """Return the WebSocket frame: ``"<digit><data>"`` or the raw bytes."""
        data = self.data
        if isinstance(data, bytes | bytearray | memoryview):
            if self.type is not EioType.MESSAGE:
                raise ValueError("only MESSAGE packets may carry binary data")
            return bytes(data)
        if data is None:
            return str(int(self.type))
        return f"{int(self.type)}{data}"

    @classmethod
    def decode(cls, frame: str | bytes | bytearray | memoryview) -> EioPacket:
        """Parse one WebSocket frame; raises :class:`DecodeError` if malformed."""
        if not isinstance(frame, str):
            return cls(EioType.MESSAGE, bytes(frame))
        ptype = packet_type(frame)
        rest = frame[1:]
        if ptype is EioType.MESSAGE:
            return cls(ptype, rest)
        return cls(ptype, rest or None)


def encode_open(
    sid: str,
    ping_interval_ms: int,
    ping_timeout_ms: int,
    max_payload: int,
    upgrades: Sequence[str] = (),
) -> str:
    """Return the OPEN packet sent first on a new session.

    Key order and compact separators match the reference server byte for byte;
    ``upgrades`` is empty for a WebSocket session (it already is one) and
    ``["websocket"]`` for one opened by long-polling.
    """
    handshake = {
        "sid": sid,
        "upgrades": list(upgrades),
        "pingInterval": int(ping_interval_ms),
        "pingTimeout": int(ping_timeout_ms),
        "maxPayload": int(max_payload),
    }
    return "0" + _dumps(handshake)


def encode_payload(packets: Iterable[str | bytes]) -> str:
    """The body of a long-polling GET response: text packets as they are, binary ones as
    ``b`` + base64, joined by :data:`RECORD_SEPARATOR`."""
    return RECORD_SEPARATOR.join(
        packet if isinstance(packet, str) else "b" + base64.b64encode(packet).decode("ascii")
        for packet in packets
    )


def decode_payload(body: str) -> list[str | bytes]:
    """Split a long-polling POST body into packets: text packets as ``str`` (for
    :meth:`EioPacket.decode` or the connection), binary MESSAGEs as ``bytes``.

    Raises :class:`DecodeError` for an empty packet or invalid base64; the packet types
    themselves are checked by whoever reads the packets.
    """
    packets: list[str | bytes] = []
    for part in body.split(RECORD_SEPARATOR):
        if not part:
            raise DecodeError("empty Engine.IO packet")
        if part[0] == "b":
            try:
                packets.append(base64.b64decode(part[1:], validate=True))
            except (binascii.Error, ValueError):
                raise DecodeError("invalid base64 in a binary packet") from None
        else:
            packets.append(part)
    return packets
