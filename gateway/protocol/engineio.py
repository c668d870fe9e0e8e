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
    "V3_BINARY_PREFIX",
    "EioPacket",
    "EioType",
    "decode_payload",
    "decode_payload_v3",
    "decode_v3_packet",
    "encode_open",
    "encode_payload",
    "encode_payload_v3",
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


# -- Engine.IO v3 (``EIO=3``: Socket.IO v2 clients, when allowed) ---------------------------
#
# The packets are the same; what differs is how binary travels and how a polling payload is
# framed. A binary MESSAGE is prefixed with its type: ``\x04`` + bytes in a WebSocket frame,
# ``b4`` + base64 in a text payload. A text payload is ``<length>:<packet>`` per packet, the
# length counted as JavaScript counts (UTF-16 code units). A client that can send binary
# POSTs an ``application/octet-stream`` payload instead: per packet a kind byte (0 text,
# 1 binary), the length as one byte per decimal digit, 255, then the packet (text as UTF-8;
# binary with its type byte first).

V3_BINARY_PREFIX = b"\x04"


def _js_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-16-le", "surrogatepass")) // 2


def encode_payload_v3(packets: Iterable[str | bytes]) -> str:
    """The body of a v3 polling GET response (always text: binary as ``b4`` + base64, which
    every v3 client decodes)."""
    parts = []
    for packet in packets:
        text = packet if isinstance(packet, str) else (
            "b4" + base64.b64encode(packet).decode("ascii"))
        parts.append(f"{_js_length(text)}:{text}")
    return "".join(parts)


def decode_v3_packet(text: str) -> str | bytes:
    """One v3 text packet: as it is, or a ``b4`` + base64 MESSAGE as its bytes."""
    if not text:
        raise DecodeError("empty Engine.IO packet")
    if text[0] != "b":
        return text
    if text[1:2] != "4":
        raise DecodeError("binary Engine.IO packet that is not a MESSAGE")
    try:
        return base64.b64decode(text[2:], validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("invalid base64 in a binary packet") from None


def _advance_units(text: str, start: int, units: int) -> int:
    """The index ``units`` UTF-16 code units after ``start`` (past the end of ``text`` when
    it is shorter): a binary search whose probes count at C speed."""
    lo, hi = start, min(start + units, len(text))
    if _js_length(text[start:hi]) < units:
        return len(text) + 1
    while lo < hi:  # the first end whose slice holds at least ``units``
        mid = (lo + hi) // 2
        if _js_length(text[start:mid]) < units:
            lo = mid + 1
        else:
            hi = mid
    if _js_length(text[start:lo]) != units:
        raise DecodeError("a packet length splits a character")
    return lo


def decode_payload_v3(body: str | bytes) -> list[str | bytes]:
    """Split a v3 polling POST body (text, or the binary framing) into packets, as
    :func:`decode_payload` does for v4. Raises :class:`DecodeError` when malformed."""
    if isinstance(body, bytes):
        return _decode_binary_payload_v3(body)
    ascii_only = body.isascii()
    packets: list[str | bytes] = []
    pos, size = 0, len(body)
    while pos < size:
        colon = body.find(":", pos, pos + 10)
        digits = body[pos:colon] if colon > pos else ""
        if not digits.isascii() or not digits.isdigit():
            raise DecodeError("invalid packet length in a payload")
        want, start = int(digits), colon + 1
        # The length counts UTF-16 code units: astral characters count twice.
        end = start + want if ascii_only else _advance_units(body, start, want)
        if end > size:
            raise DecodeError("payload shorter than its packet length")
        packets.append(decode_v3_packet(body[start:end]))
        pos = end
    if not packets:
        raise DecodeError("empty payload")
    return packets


def _decode_binary_payload_v3(body: bytes) -> list[str | bytes]:
    packets: list[str | bytes] = []
    pos, size = 0, len(body)
    while pos < size:
        kind = body[pos]
        if kind not in (0, 1):
            raise DecodeError("invalid packet kind in a binary payload")
        end = body.find(b"\xff", pos + 1, pos + 12)
        digits = body[pos + 1:end] if end > pos + 1 else b""
        if not digits or any(d > 9 for d in digits):
            raise DecodeError("invalid packet length in a binary payload")
        length = int("".join(str(d) for d in digits))
        start, pos = end + 1, end + 1 + length
        if pos > size or length == 0:
            raise DecodeError("binary payload shorter than its packet length")
        chunk = body[start:pos]
        if kind == 0:
            try:
                packets.append(decode_v3_packet(chunk.decode("utf-8")))
            except UnicodeDecodeError:
                raise DecodeError("invalid UTF-8 in a payload") from None
        elif chunk[:1] != V3_BINARY_PREFIX:
            raise DecodeError("binary Engine.IO packet that is not a MESSAGE")
        else:
            packets.append(chunk[1:])
    return packets
