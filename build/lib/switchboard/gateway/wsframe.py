"""Server-to-client WebSocket data frames, encoded once and written to many transports.

A server frame is unmasked (RFC 6455 §5.1), so its bytes depend only on the payload: the
gateway encodes a fan-out packet's frame once per message and writes the same bytes to every
member's transport. Compression is off (permessage-deflate would make frames per-connection).
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + text opcode
_BINARY = 0x82  # FIN + binary opcode


def encode(payload: str | bytes) -> bytes:
    """One complete, unfragmented, unmasked frame carrying ``payload``."""
    if isinstance(payload, str):
        data = payload.encode()
        first = _TEXT
    else:
        data = bytes(payload)
        first = _BINARY
    n = len(data)
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + data


def encode_all(payloads: list[str | bytes]) -> bytes:
    """The frames of one packet (text frame + attachments), concatenated for one write."""
    if len(payloads) == 1:
        return encode(payloads[0])
    return b"".join(encode(p) for p in payloads)
