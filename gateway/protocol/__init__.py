"""Sans-I/O protocol core: Engine.IO v4 + Socket.IO v5 over WebSocket.

Pure functions and state machines; no sockets, no event loop, no clock (time is
passed in as float seconds).  Modules:

* :mod:`.errors`     -- the ProtocolError hierarchy
* :mod:`.engineio`   -- Engine.IO packets and the OPEN handshake
* :mod:`.socketio`   -- Socket.IO packets, encoders and the stateful Decoder
* :mod:`.states`     -- namespace states and their transition table
* :mod:`.events`     -- what a connection reports (frozen events)
* :mod:`.connection` -- the per-connection state machine (namespaces, heartbeat)
* :mod:`.polling`    -- the long-polling side of a session (payloads, the waiting GET)
"""

from .connection import (
    AckReceived,
    Closed,
    Connection,
    ConnectionConfig,
    ConnectRequested,
    DisconnectRequested,
    Event,
    EventReceived,
)
from .engineio import EioPacket, EioType, encode_open
from .errors import DecodeError, NotConnected, PayloadTooLarge, ProtocolError, UnexpectedBinary
from .socketio import Decoder, Packet, PacketType, encode_event_frames, encode_frames

__all__ = [
    "AckReceived",
    "Closed",
    "ConnectRequested",
    "Connection",
    "ConnectionConfig",
    "DecodeError",
    "Decoder",
    "DisconnectRequested",
    "EioPacket",
    "EioType",
    "Event",
    "EventReceived",
    "NotConnected",
    "Packet",
    "PacketType",
    "PayloadTooLarge",
    "ProtocolError",
    "UnexpectedBinary",
    "encode_event_frames",
    "encode_frames",
    "encode_open",
]
