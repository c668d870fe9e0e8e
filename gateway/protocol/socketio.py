"""Socket.IO v5 packets (the default "socket.io-parser" format) over Engine.IO v4.

Layout of a Socket.IO packet inside an Engine.IO MESSAGE (whose "4" prefix is *not*
part of what :class:`Decoder` receives, but *is* part of what the encoders return)::

    <type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]
    + one binary WebSocket frame per attachment (BINARY_EVENT / BINARY_ACK only)

* ``type`` is one digit, see :class:`PacketType`.
* ``attachments`` (binary types only) is a decimal count followed by ``-``.
* ``namespace`` is present only when it is not ``"/"``; it starts with ``/`` and runs
  up to the first ``,`` or to the end of the packet (so ``0/admin`` == ``0/admin,``).
* ``ack id`` is a decimal integer.
* the payload is JSON; binary values are replaced by
  ``{"_placeholder":true,"num":N}`` with ``N`` numbering attachments depth-first.

Examples: ``42["foo"]``, ``42/admin,12["foo"]``, ``43/admin,13["bar"]``,
``452-["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]``,
``461-/admin,1[{"_placeholder":true,"num":0}]``, ``40/admin,{"sid":"…"}``,
``44{"message":"Not authorized"}``, ``41/admin,``.

JSON is written compactly with ``ensure_ascii=False`` so ordinary values come out byte
identical to JavaScript's ``JSON.stringify``.  Known difference: integral floats are
written ``1.0`` where JavaScript writes ``1`` (same value once parsed).

This is the packet codec with its tables, which is why it runs past the ~400 lines the other
modules keep to.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .errors import DecodeError, PayloadTooLarge, UnexpectedBinary

__all__ = [
    "RESERVED_EVENTS",
    "Decoder",
    "Packet",
    "PacketType",
    "encode_event_frames",
    "encode_frames",
]


class PacketType(IntEnum):
    """Socket.IO packet types (the first digit after the Engine.IO "4")."""

    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


#: Event names the reference implementation refuses to receive (they collide with the
#: library's own lifecycle events).
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)

# An ack id of up to 15 digits stays below 2**53, so it survives a round trip through
# a JavaScript number.
MAX_ACK_ID_DIGITS = 15

_TYPE_BY_CHAR: dict[str, PacketType] = {str(int(t)): t for t in PacketType}
# Engine.IO MESSAGE prefix "4" + Socket.IO type digit.
_PREFIX: dict[PacketType, str] = {t: f"4{int(t)}" for t in PacketType}
_BINARY_TYPES = (PacketType.BINARY_EVENT, PacketType.BINARY_ACK)
_DATA_TYPES = (
    PacketType.EVENT,
    PacketType.ACK,
    PacketType.BINARY_EVENT,
    PacketType.BINARY_ACK,
)
_BYTES_LIKE = (bytes, bytearray, memoryview)

# Marks "no payload at all", which differs from a JSON ``null`` payload.
_ABSENT: Any = object()


# --------------------------------------------------------------------------- JSON

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _to_json(obj: Any) -> str:
    text = _dumps(obj)
    # Lone surrogates (e.g. from a client's "\ud800") would make the frame invalid
    # UTF-8; JSON.stringify escapes them, so do the same.  isascii() is O(1), which
    # keeps the common case free.
    if not text.isascii() and _SURROGATE.search(text) is not None:
        text = _SURROGATE.sub(_escape_surrogate, text)
    return text


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; Python's parser accepts them by default.
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e400"
        raise ValueError("number out of range")
    return value


def _parse_int(text: str) -> int | float:
    # Mirror JavaScript numbers: integers beyond 2**53 become floats, overflow is an
    # error.  This also keeps int() away from huge digit strings.
    if len(text) <= 15:
        return int(text)
    value = _parse_float(text)
    if abs(value) <= 2**53:
        return int(text)
    return value


_loads = json.JSONDecoder(
    parse_float=_parse_float, parse_int=_parse_int, parse_constant=_reject_constant
).decode


# ------------------------------------------------------------------------- packets


@dataclass(frozen=True, slots=True)
class Packet:
    """A decoded Socket.IO packet.

    ``data`` is ``None`` when the packet has no payload.  For binary types it holds
    the reconstructed value with ``bytes`` in place of the placeholders.
    """

    type: PacketType
    namespace: str = "/"
    data: Any = None
    id: int | None = None

    def encode(self) -> list[str | bytes]:
        """Shortcut for :func:`encode_frames`."""
        return encode_frames(self)


def _deconstruct(obj: Any, buffers: list[bytes]) -> Any:
    """Copy ``obj`` with bytes-like values replaced by placeholders, depth first."""
    if isinstance(obj, _BYTES_LIKE):
        placeholder = {"_placeholder": True, "num": len(buffers)}
        buffers.append(bytes(obj))
        return placeholder
    if isinstance(obj, list | tuple):
        return [_deconstruct(item, buffers) for item in obj]
    if isinstance(obj, dict):
        return {key: _deconstruct(value, buffers) for key, value in obj.items()}
    return obj


def encode_frames(packet: Packet) -> list[str | bytes]:
    """Return the WebSocket frames of ``packet``, Engine.IO "4" prefix included.

    EVENT/ACK whose data contains bytes-like values anywhere are sent as
    BINARY_EVENT/BINARY_ACK: one text frame followed by the raw attachments.
    Raises ``TypeError``/``ValueError`` for data that JSON cannot represent.
    """
    ptype = PacketType(packet.type)
    namespace = packet.namespace
    if not namespace.startswith("/"):
        raise ValueError("namespace must start with '/'")
    nsp = "" if namespace == "/" else namespace + ","
    ack_id = packet.id
    if ack_id is None:
        id_part = ""
    elif type(ack_id) is int and ack_id >= 0:
        id_part = str(ack_id)
    else:
        raise ValueError("ack id must be a non-negative int")
    data = packet.data
    if data is None:
        return [_PREFIX[ptype] + nsp + id_part]
    if ptype not in _DATA_TYPES:
        return [_PREFIX[ptype] + nsp + id_part + _to_json(data)]

    buffers: list[bytes] = []
    try:
        body = _to_json(data)
    except TypeError:
        # The JSON encoder rejects bytes; only then pay for the walk.  If the
        # TypeError had another cause, the second attempt raises it again.
        body = _to_json(_deconstruct(data, buffers))
    if not buffers and ptype not in _BINARY_TYPES:
        return [_PREFIX[ptype] + nsp + id_part + body]
    is_event = ptype in (PacketType.EVENT, PacketType.BINARY_EVENT)
    head = _PREFIX[PacketType.BINARY_EVENT if is_event else PacketType.BINARY_ACK]
    frames: list[str | bytes] = [f"{head}{len(buffers)}-{nsp}{id_part}{body}"]
    frames.extend(buffers)
    return frames


def encode_event_frames(namespace: str, event: str, args: list[Any]) -> list[str | bytes]:
    """Frames for ``Packet(EVENT, namespace, [event, *args])``, without the Packet.

    Fan-out hot path: one JSON dump and one concatenation when there is no binary.
    """
    payload = [event, *args]
    try:
        text = _to_json(payload)
    except TypeError:
        return encode_frames(Packet(PacketType.EVENT, namespace, payload))
    if namespace == "/":
        return ["42" + text]
    if not namespace.startswith("/"):
        raise ValueError("namespace must start with '/'")
    return [f"42{namespace},{text}"]


# ------------------------------------------------------------------------ decoding


def _is_digits(text: str) -> bool:
    # isdigit() alone accepts e.g. "²" or Arabic-Indic digits.
    return text.isascii() and text.isdigit()


def _find_placeholders(data: Any, count: int) -> list[tuple[Any, Any, int]]:
    """Return ``(container, key, num)`` for every placeholder in ``data``.

    Every attachment must be referenced exactly once: an unused one would be buffered
    for nothing, and a repeated one would let a small frame expand into many copies
    when the packet is re-serialised downstream.  Iterative, so nesting depth is
    bounded only by what the JSON parser accepted.
    """
    refs: list[tuple[Any, Any, int]] = []
    seen = [False] * count
    stack: list[Any] = [data]
    while stack:
        node = stack.pop()
        items = enumerate(node) if type(node) is list else node.items()
        for key, value in items:
            kind = type(value)
            if kind is dict:
                if value.get("_placeholder") is True:
                    num = value.get("num")
                    if len(value) != 2 or type(num) is not int or not 0 <= num < count:
                        raise DecodeError("invalid attachment placeholder")
                    if seen[num]:
                        raise DecodeError("duplicate attachment placeholder")
                    seen[num] = True
                    refs.append((node, key, num))
                else:
                    stack.append(value)
            elif kind is list:
                stack.append(value)
    if len(refs) != count:
        raise DecodeError("unreferenced binary attachment")
    return refs


class Decoder:
    """Stateful decoder for the Socket.IO packets of one connection.

    Feed it the payload of every Engine.IO text MESSAGE (without the leading "4") with
    :meth:`feed_text` and every binary frame with :meth:`feed_binary`.  Both return a
    complete :class:`Packet` or ``None`` while binary attachments are still awaited.
    Errors are :class:`~gateway.protocol.errors.ProtocolError` subclasses; after one
    the decoder should be discarded together with its connection.

    ``client=True`` decodes packets sent *by a server* (allows CONNECT_ERROR); the
    default is the server side, where a client sending CONNECT_ERROR is invalid.
    """

    __slots__ = (
        "_buffered",
        "_buffers",
        "_client",
        "_max_attachments",
        "_max_buffered",
        "_partial",
        "_refs",
    )

    def __init__(
        self, max_attachments: int = 16, max_buffered: int = 1_000_000, *, client: bool = False
    ) -> None:
        self._max_attachments = max_attachments
        self._max_buffered = max_buffered
        self._client = client
        self._partial: Packet | None = None
        self._refs: list[tuple[Any, Any, int]] | None = None
        self._buffers: list[bytes] | None = None
        self._buffered = 0

    @property
    def awaiting(self) -> int:
        """Number of binary attachments still expected (0 when idle)."""
        if self._refs is None or self._buffers is None:
            return 0
        return len(self._refs) - len(self._buffers)

    def reset(self) -> None:
        """Drop any partially received binary packet."""
        self._partial = None
        self._refs = None
        self._buffers = None
        self._buffered = 0

    def feed_text(self, payload: str) -> Packet | None:
        """Decode one text packet; ``None`` means attachments must follow."""
        if self._partial is not None:
            raise DecodeError("text packet while awaiting binary attachments")
        size = len(payload)
        if not size:
            raise DecodeError("empty Socket.IO packet")
        ptype = _TYPE_BY_CHAR.get(payload[0])
        if ptype is None:
            raise DecodeError("unknown Socket.IO packet type")
        pos = 1

        attachments = -1
        if ptype in _BINARY_TYPES:
            dash = payload.find("-", 1)
            if dash < 0:
                raise DecodeError("missing attachment count")
            count = payload[1:dash]
            if not _is_digits(count):
                raise DecodeError("invalid attachment count")
            # The length test keeps int() away from absurdly long digit strings.
            if len(count) > 9 or int(count) > self._max_attachments:
                raise PayloadTooLarge("too many binary attachments")
            attachments = int(count)
            pos = dash + 1

        namespace = "/"
        if pos < size and payload[pos] == "/":
            comma = payload.find(",", pos)
            if comma < 0:
                namespace = payload[pos:]
                pos = size
            else:
                namespace = payload[pos:comma]
                pos = comma + 1

        ack_id: int | None = None
        end = pos
        while end < size and "0" <= payload[end] <= "9":
            end += 1
        if end > pos:
            if end - pos > MAX_ACK_ID_DIGITS:
                raise DecodeError("ack id too long")
            ack_id = int(payload[pos:end])
            pos = end

        data: Any = _ABSENT
        if pos < size:
            try:
                data = _loads(payload[pos:])
            except RecursionError:
                raise DecodeError("JSON payload nested too deeply") from None
            except ValueError:  # JSONDecodeError and our number checks
                raise DecodeError("invalid JSON payload") from None

        data = self._validate(ptype, ack_id, data)
        packet = Packet(ptype, namespace, data, ack_id)
        if attachments <= 0:
            if attachments == 0:
                _find_placeholders(data, 0)  # no placeholder may point anywhere
            return packet
        self._refs = _find_placeholders(data, attachments)
        self._partial = packet
        self._buffers = []
        self._buffered = 0
        return None

    def _validate(self, ptype: PacketType, ack_id: int | None, data: Any) -> Any:
        """Check the payload against the packet type; returns the Packet data."""
        if ptype is PacketType.EVENT or ptype is PacketType.BINARY_EVENT:
            if type(data) is not list:
                raise DecodeError("EVENT payload must be an array")
            if not data:
                raise DecodeError("EVENT payload must not be empty")
            name = data[0]
            if type(name) is not str:
                raise DecodeError("event name must be a string")
            if name in RESERVED_EVENTS:
                raise DecodeError("reserved event name")
            return data
        if ptype is PacketType.ACK or ptype is PacketType.BINARY_ACK:
            if ack_id is None:
                raise DecodeError("ACK without ack id")
            if type(data) is not list:
                raise DecodeError("ACK payload must be an array")
            return data
        if ack_id is not None:
            raise DecodeError("unexpected ack id")
        if ptype is PacketType.CONNECT:
            if data is _ABSENT:
                return None
            if type(data) is not dict:
                raise DecodeError("CONNECT payload must be an object")
            return data
        if ptype is PacketType.DISCONNECT:
            if data is not _ABSENT:
                raise DecodeError("DISCONNECT must not have a payload")
            return None
        # CONNECT_ERROR
        if not self._client:
            raise DecodeError("CONNECT_ERROR from client")
        if type(data) is not dict and type(data) is not str:
            raise DecodeError("CONNECT_ERROR payload must be an object or a string")
        return data

    def feed_binary(self, data: bytes | bytearray | memoryview) -> Packet | None:
        """Take one attachment; returns the packet once the last one arrived."""
        partial = self._partial
        if partial is None or self._refs is None or self._buffers is None:
            raise UnexpectedBinary("unexpected binary frame")
        chunk = bytes(data)  # no-op for bytes; a memoryview's len() may not be bytes
        self._buffered += len(chunk)
        if self._buffered > self._max_buffered:
            self.reset()
            raise PayloadTooLarge("binary attachments too large")
        buffers = self._buffers
        buffers.append(chunk)
        refs = self._refs
        if len(buffers) < len(refs):
            return None
        for container, key, num in refs:
            container[key] = buffers[num]
        self.reset()
        return partial
