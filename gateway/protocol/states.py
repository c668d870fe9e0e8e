"""The namespace states of a connection and the steps between them (an explicit table, as
h11's ``_state.py`` keeps one); :class:`~.connection.Connection` applies it."""

from __future__ import annotations

from enum import Enum

__all__ = ["NS_TRANSITIONS", "REMOTE_STEPS", "NsState", "NsStep"]


class NsState(Enum):
    """Where a namespace of a connection stands (absent ones are simply not recorded)."""

    ABSENT = "absent"
    PENDING = "pending"
    CONNECTED = "connected"


class NsStep(Enum):
    CONNECT = "the client sent CONNECT"
    ACCEPT = "the server accepted"
    REFUSE = "the server refused"
    LEAVE = "the client sent DISCONNECT"
    KICK = "the server disconnected it"


_A, _P, _C = NsState.ABSENT, NsState.PENDING, NsState.CONNECTED
#: Every allowed step; anything else is refused (see :meth:`~.connection.Connection._step`).
NS_TRANSITIONS: dict[tuple[NsState, NsStep], NsState] = {
    (_A, NsStep.CONNECT): _P,
    (_P, NsStep.ACCEPT): _C,
    (_P, NsStep.REFUSE): _A,
    (_C, NsStep.LEAVE): _A,
    (_C, NsStep.KICK): _A,
}
#: Steps the client takes (an illegal one is a remote protocol error).
REMOTE_STEPS = frozenset({NsStep.CONNECT, NsStep.LEAVE})
