"""Exception hierarchy of the sans-I/O protocol core.

Layout::

    ProtocolError            base, carries ``reason``
    ├── DecodeError          a frame/packet is malformed or violates the protocol
    ├── PayloadTooLarge      a size or count limit was exceeded
    ├── UnexpectedBinary     a binary frame arrived while no attachment was awaited
    └── NotConnected         the server tried to use a namespace in the wrong state

``reason`` is a short English sentence without any client-supplied text, so it is
safe to log and to use as a WebSocket close reason.  The first three are raised for
bad *input*; ``NotConnected`` is a guard against programming errors on the server
side and is raised by :class:`~gateway.protocol.connection.Connection` actions.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "NotConnected",
    "PayloadTooLarge",
    "ProtocolError",
    "UnexpectedBinary",
]


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`gateway.protocol`."""

    default_reason = "protocol error"

    def __init__(self, reason: str | None = None) -> None:
        self.reason: str = reason if reason is not None else self.default_reason
        super().__init__(self.reason)


class DecodeError(ProtocolError):
    """A frame or packet could not be decoded or is invalid for its type."""

    default_reason = "malformed packet"


class PayloadTooLarge(ProtocolError):
    """A frame, the buffered attachments or the attachment count exceed a limit."""

    default_reason = "payload too large"


class UnexpectedBinary(ProtocolError):
    """A binary frame arrived while no binary attachment was awaited."""

    default_reason = "unexpected binary frame"


class NotConnected(ProtocolError):
    """A server action targeted a namespace that is not in the required state.

    Nothing may be sent to a namespace before its CONNECT has been acknowledged
    (:meth:`Connection.accept`), and only pending namespaces can be accepted or
    refused.
    """

    default_reason = "namespace not connected"
