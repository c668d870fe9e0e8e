"""The long-polling side of one Engine.IO session, and its upgrade to WebSocket (sans-I/O).

The I/O layer owns the HTTP requests and the clock; this object owns what the protocol says
about them. The Engine.IO/Socket.IO state proper (heartbeat, namespaces) stays in
:class:`~gateway.protocol.connection.Connection`, whatever the transport::

    polling = Polling(max_packets=16)
    GET:   body = polling.get()          # None: keep the request waiting
    later: body = polling.flush()        # after polling.send(conn.data_to_send())
    POST:  for packet in polling.post(body, now): conn.receive_frame(packet, now)

Outgoing packets queue here until a GET takes them, at most ``max_packets`` per response
(python-engineio clients refuse payloads of more than 16 packets). At most one GET waits
at a time: a second one is :class:`PollOverlap`, after which the session is over.

Upgrade (a WebSocket opened with this session's sid)::

    NONE ──probe_opened()──► PROBING ──"2probe"──► PROBED ──"5"──► UPGRADED
      ▲                         │                     │
      └──────── probe_failed() ─┴─────────────────────┘          any ──close──► CLOSED

In PROBED and UPGRADED a waiting GET is answered at once with a NOOP (``6``) when there is
nothing else for it, so that the client's paused polling ends and it can send ``5``. Once
UPGRADED, polling requests are :class:`TransportMismatch` and :meth:`take_all` hands the
queued packets to the WebSocket, in order.

Closing, three ways, as the reference server does:

- :meth:`client_closed` — the client sent CLOSE (``1``): a waiting GET gets ``6``.
- :meth:`abort` — an error or timeout ends the session at once: a waiting GET gets ``1``.
- :meth:`close` — the server closes gracefully: ``1`` is queued behind what is pending and
  the session is :attr:`finished` once a GET has taken it.
- :meth:`go_away` — the server shuts down: what is pending goes out, then the session ends
  with no ``1``, so that the client's next poll fails (an unknown session, or no server)
  and it reconnects elsewhere. python-engineio's client takes a server's ``1`` as a
  deliberate disconnect and does not reconnect (the JavaScript client reconnects either
  way).

Holding (for clusters without sticky sessions): while :attr:`holding`, MESSAGE packets from
the client are kept instead of returned, so that a session nobody has connected a
namespace on yet can move to the gateway that receives the WebSocket (see
``docs/polling.md``). :meth:`release` returns them; the deadline says when to do so anyway.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from enum import Enum

from .engineio import EioType, encode_payload, encode_payload_v3, packet_type
from .errors import (
    DecodeError,
    LocalProtocolError,
    PollOverlap,
    TransportMismatch,
    UpgradeRefused,
)

__all__ = ["Polling", "UpgradeState", "UpgradeStep"]

NOOP = "6"
CLOSE = "1"
#: Packet types a client may send but that mean nothing over polling.
_IGNORED = frozenset({EioType.OPEN, EioType.UPGRADE, EioType.NOOP})


class UpgradeState(Enum):
    NONE = "none"
    PROBING = "probing"
    PROBED = "probed"
    UPGRADED = "upgraded"
    CLOSED = "closed"


class UpgradeStep(Enum):
    OPEN = "a WebSocket opened with the session's sid"
    PROBE = "2probe on it"
    UPGRADE = "5 on it"
    FAIL = "the probe closed, misbehaved or timed out"
    CLOSE = "the session ended"


_S, _T = UpgradeState, UpgradeStep
#: Every allowed transition; anything else is refused (see :meth:`Polling._step`).
TRANSITIONS: dict[tuple[UpgradeState, UpgradeStep], UpgradeState] = {
    (_S.NONE, _T.OPEN): _S.PROBING,
    (_S.PROBING, _T.PROBE): _S.PROBED,
    (_S.PROBED, _T.UPGRADE): _S.UPGRADED,
    (_S.PROBING, _T.FAIL): _S.NONE,
    (_S.PROBED, _T.FAIL): _S.NONE,
    **{(state, _T.CLOSE): _S.CLOSED for state in UpgradeState},
}


def _size(packet: str | bytes) -> int:
    # Characters for text (close enough to bytes for a limit), base64 size for binary.
    return len(packet) if isinstance(packet, str) else (len(packet) + 2) // 3 * 4 + 1


class Polling:
    """See the module docstring."""

    __slots__ = (
        "_bytes",
        "_encode",
        "_finishing",
        "_held",
        "_hold",
        "_hold_deadline",
        "_max_packets",
        "_queue",
        "_state",
        "_waiting",
    )

    def __init__(self, max_packets: int = 16, hold: float = 0.0, eio: int = 4) -> None:
        """``eio``: the client's Engine.IO revision (3 frames payloads by length)."""
        self._encode = encode_payload if eio == 4 else encode_payload_v3
        self._queue: deque[str | bytes] = deque()
        self._bytes = 0
        self._waiting = False
        self._state = UpgradeState.NONE
        self._max_packets = max_packets if max_packets > 0 else 1 << 30
        self._finishing = False
        self._hold = hold
        self._held: list[str | bytes] | None = [] if hold > 0 else None
        self._hold_deadline: float | None = None

    # ------------------------------------------------------------------ properties

    @property
    def state(self) -> UpgradeState:
        return self._state

    @property
    def waiting(self) -> bool:
        """A GET is waiting for something to say."""
        return self._waiting

    @property
    def buffered(self) -> int:
        """Approximate bytes queued for the client (for the slow-reader bound)."""
        return self._bytes

    @property
    def holding(self) -> bool:
        return self._held is not None

    @property
    def finished(self) -> bool:
        """The session is over (closed, or its graceful close packet has been taken)."""
        return self._state is UpgradeState.CLOSED

    # ------------------------------------------------------------------- output

    def send(self, packets: Iterable[str | bytes]) -> None:
        """Queue packets for the client (call :meth:`flush` to answer a waiting GET)."""
        if self._state is UpgradeState.CLOSED or self._finishing:
            return
        for packet in packets:
            self._queue.append(packet)
            self._bytes += _size(packet)

    def get(self) -> str | None:
        """A GET arrived: its body now, or None when it must wait (see :meth:`flush`)."""
        self._check_polling()
        if self._waiting:
            raise PollOverlap("overlap from client")
        self._waiting = True
        return self.flush()

    def flush(self) -> str | None:
        """The body for the waiting GET when there is something to say, else None."""
        if not self._waiting:
            return None
        queue = self._queue
        if queue:
            if len(queue) <= self._max_packets:
                packets = list(queue)
                queue.clear()
                self._bytes = 0
            else:
                packets = [queue.popleft() for _ in range(self._max_packets)]
                self._bytes -= sum(map(_size, packets))
            if self._finishing and not queue:
                self._state = UpgradeState.CLOSED
        elif self._state in (UpgradeState.PROBED, UpgradeState.UPGRADED):
            packets = [NOOP]
        else:
            return None
        self._waiting = False
        return self._encode(packets)

    def abandon(self) -> None:
        """The waiting GET went away unanswered (its connection closed)."""
        self._waiting = False

    # -------------------------------------------------------------------- input

    def post(self, packets: Iterable[str | bytes], now: float) -> list[str | bytes]:
        """A POST's packets (see :func:`~gateway.protocol.engineio.decode_payload`): those to
        hand to the connection now. Held MESSAGEs are kept (see :meth:`release`)."""
        self._check_polling()
        out: list[str | bytes] = []
        held = self._held
        for packet in packets:
            if isinstance(packet, str):
                try:
                    kind = packet_type(packet)
                except DecodeError:
                    out.append(packet)  # the connection refuses it, and closes
                    continue
                if kind in _IGNORED:
                    continue
                message = kind is EioType.MESSAGE
            else:
                message = True
            if message and held is not None:
                if not held:
                    self._hold_deadline = now + self._hold
                held.append(packet)
            else:
                out.append(packet)
        return out

    # ------------------------------------------------------------------ holding

    def release(self) -> list[str | bytes]:
        """Stop holding; the held packets, in order, for the connection."""
        held = self._held or []
        self._held = None
        self._hold_deadline = None
        return held

    def next_deadline(self) -> float | None:
        """When the held packets must be released at the latest."""
        return self._hold_deadline

    def export(self) -> tuple[list[str | bytes], list[str | bytes]]:
        """Hand the session over (it moves to another gateway): what is queued for the
        client and what it sent that was held. This object is closed afterwards."""
        queued, held = list(self._queue), self.release()
        self._queue.clear()
        self._bytes = 0
        self._state = UpgradeState.CLOSED
        return queued, held

    # ------------------------------------------------------------------ upgrade

    def probe_opened(self) -> None:
        """A WebSocket opened with this sid; raises UpgradeRefused unless it may probe."""
        self._step(UpgradeStep.OPEN)

    def probe_received(self, frame: str | bytes) -> str | None:
        """A frame on the probing WebSocket. Returns ``"3probe"`` to send on it, or None
        when it completed the upgrade; raises UpgradeRefused when it broke the sequence
        (then call :meth:`probe_failed` and close that WebSocket)."""
        if frame == "2probe" and self._state is UpgradeState.PROBING:
            self._step(UpgradeStep.PROBE)
            return "3probe"
        if frame == "5" and self._state is UpgradeState.PROBED:
            self._step(UpgradeStep.UPGRADE)
            return None
        raise UpgradeRefused("unexpected packet during the upgrade")

    def probe_failed(self) -> None:
        """The probing WebSocket closed, misbehaved or timed out: stay on polling."""
        if self._state in (UpgradeState.PROBING, UpgradeState.PROBED):
            self._step(UpgradeStep.FAIL)

    def take_all(self) -> list[str | bytes]:
        """After the upgrade: everything queued, for the WebSocket, in order."""
        if self._state is not UpgradeState.UPGRADED:
            raise LocalProtocolError("take_all before the upgrade completed")
        packets = list(self._queue)
        self._queue.clear()
        self._bytes = 0
        return packets

    # ------------------------------------------------------------------ closing

    def client_closed(self) -> str | None:
        """The client sent CLOSE: the body for a waiting GET (a NOOP), if one waits."""
        return self._end(NOOP)

    def abort(self) -> str | None:
        """The session ends now (error, timeout): the body for a waiting GET (CLOSE)."""
        return self._end(CLOSE)

    def close(self) -> str | None:
        """Close gracefully: CLOSE goes out after what is queued. The body for a waiting
        GET, if one waits; :attr:`finished` once the CLOSE has been taken."""
        if self._state is UpgradeState.CLOSED or self._finishing:
            return None
        self._queue.append(CLOSE)
        self._bytes += 1
        self._finishing = True
        return self.flush()

    def go_away(self) -> str | None:
        """The server shuts down: what is queued goes to the next GET, and then the session
        is over, without CLOSE (the module docstring says why). The body for a waiting GET
        (a NOOP when nothing is queued), if one waits."""
        if self._state is UpgradeState.CLOSED or self._finishing:
            return None
        if not self._queue:
            return self._end(NOOP)
        self._finishing = True
        return self.flush()

    # ---------------------------------------------------------------- internals

    def _end(self, packet: str) -> str | None:
        waiting = self._waiting and self._state is not UpgradeState.CLOSED
        self._step(UpgradeStep.CLOSE)
        self._queue.clear()
        self._bytes = 0
        self._waiting = False
        self._held = None
        return self._encode([packet]) if waiting else None

    def _check_polling(self) -> None:
        if self._state is UpgradeState.UPGRADED:
            raise TransportMismatch()
        if self._state is UpgradeState.CLOSED:
            raise LocalProtocolError("polling request for a closed session")

    def _step(self, step: UpgradeStep) -> None:
        new = TRANSITIONS.get((self._state, step))
        if new is None:
            raise UpgradeRefused(f"cannot {step.name.lower()} while {self._state.value}")
        self._state = new
