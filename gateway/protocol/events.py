"""What the connection state machine reports to the I/O layer: frozen events, one per thing
the client did or the connection suffered."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "AckReceived",
    "Closed",
    "ConnectRequested",
    "DisconnectRequested",
    "Event",
    "EventReceived",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of everything :meth:`~.connection.Connection.receive_frame`/``tick`` return."""


@dataclass(frozen=True, slots=True)
class ConnectRequested(Event):
    """The client asks to join ``namespace``; answer with accept() or refuse()."""

    namespace: str
    auth: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DisconnectRequested(Event):
    """The client left ``namespace``; the Engine.IO connection stays open."""

    namespace: str


@dataclass(frozen=True, slots=True)
class EventReceived(Event):
    """An event; ``ack_id`` is set when the client waits for send_ack()."""

    namespace: str
    event: str
    args: list[Any]
    ack_id: int | None


@dataclass(frozen=True, slots=True)
class AckReceived(Event):
    """The client acknowledged the server event ``ack_id`` (not checked here)."""

    namespace: str
    ack_id: int
    args: list[Any]


@dataclass(frozen=True, slots=True)
class Closed(Event):
    """The connection is over; emitted once.  ``error`` is True for bad input/timeouts."""

    reason: str
    error: bool
