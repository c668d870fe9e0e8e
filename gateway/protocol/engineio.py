"""Engine.IO v4 packets, WebSocket transport only.

Layout of one WebSocket message (one Engine.IO packet per frame)::

    text frame:    <type digit>[<data>]      e.g. "2", "2probe", "42[\"x\"]"
    binary frame:  <raw bytes>               always a MESSAGE, no type prefix

Types: OPEN=0 CLOSE=1 PING=2 PONG=3 MESSAGE=4 UPGRADE=5 NOOP=6.  Over WebSocket there
is no base64 ("b" prefix) and no record separator (those exist for long-polling only).

The OPEN packet is sent by the server as the first frame::

    0{"sid":"…","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum

from .errors import DecodeError

__all__ = ["EioPacket", "EioType", "encode_open"]


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
        if not frame:
            raise DecodeError("empty Engine.IO packet")
        ptype = _TYPE_BY_CHAR.get(frame[0])
        if ptype is None:
            raise DecodeError("unknown Engine.IO packet type")
        rest = frame[1:]
        if ptype is EioType.MESSAGE:
            return cls(ptype, rest)
        return cls(ptype, rest or None)


def encode_open(sid: str, ping_interval_ms: int, ping_timeout_ms: int, max_payload: int) -> str:
    """Return the OPEN frame sent first on a new WebSocket session.

    Key order and compact separators match the reference server byte for byte;
    ``upgrades`` is empty because the session already is a WebSocket.
    """
    handshake = {
        "sid": sid,
        "upgrades": [],
        "pingInterval": int(ping_interval_ms),
        "pingTimeout": int(ping_timeout_ms),
        "maxPayload": int(max_payload),
    }
    return "0" + _dumps(handshake)
