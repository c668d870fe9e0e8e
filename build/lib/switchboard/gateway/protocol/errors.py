"""Exception hierarchy of the sans-I/O protocol core.

Layout (as h11 does, the peer's faults and our own are told apart)::

    ProtocolError                base, carries ``reason``
    ├── RemoteProtocolError      the client broke the protocol: answer or close it
    │   ├── DecodeError          a frame/packet is malformed or violates the protocol
    │   ├── PayloadTooLarge      a size or count limit was exceeded
    │   ├── UnexpectedBinary     a binary frame arrived while no attachment was awaited
    │   ├── PollOverlap          a second long-polling GET while one is waiting
    │   ├── TransportMismatch    a polling request for a session that upgraded
    │   └── UpgradeRefused       a WebSocket for a session that cannot upgrade (now)
    └── LocalProtocolError       this server misused a state machine (a bug)
        └── NotConnected         the server tried to use a namespace in the wrong state

``reason`` is a short English sentence without any client-supplied text, so it is
safe to log and to use as a WebSocket close reason.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "LocalProtocolError",
    "NotConnected",
    "PayloadTooLarge",
    "PollOverlap",
    "ProtocolError",
    "RemoteProtocolError",
    "TransportMismatch",
    "UnexpectedBinary",
    "UpgradeRefused",
]


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`gateway.protocol`."""

    default_reason = "protocol error"

    def __init__(self, reason: str | None = None) -> None:
        self.reason: str = reason if reason is not None else self.default_reason
        super().__init__(self.reason)


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; its connection (or request) gets an error."""


class LocalProtocolError(ProtocolError):
    """The server called a state machine in a state that does not allow it (a bug)."""


class DecodeError(RemoteProtocolError):
    """A frame or packet could not be decoded or is invalid for its type."""

    default_reason = "malformed packet"


class PayloadTooLarge(RemoteProtocolError):
    """A frame, the buffered attachments or the attachment count exceed a limit."""

    default_reason = "payload too large"


class UnexpectedBinary(RemoteProtocolError):
    """A binary frame arrived while no binary attachment was awaited."""

    default_reason = "unexpected binary frame"


class PollOverlap(RemoteProtocolError):
    """A long-polling GET arrived while another one of the session was still waiting."""

    default_reason = "overlapping poll requests"


class TransportMismatch(RemoteProtocolError):
    """A long-polling request for a session that has upgraded to WebSocket."""

    default_reason = "session is not polling"


class UpgradeRefused(RemoteProtocolError):
    """A WebSocket asked to upgrade a session that is already upgrading or upgraded, or the
    probe on it broke the upgrade sequence."""

    default_reason = "upgrade refused"


class NotConnected(LocalProtocolError):
    """A server action targeted a namespace that is not in the required state.

    Nothing may be sent to a namespace before its CONNECT has been acknowledged
    (:meth:`Connection.accept`), and only pending namespaces can be accepted or
    refused.
    """

    default_reason = "namespace not connected"
