"""What connection state recovery remembers (pure: no sockets, time passed in).

Two things, both bounded:

- **The log**: every recoverable publication (an EMIT to a namespace with recovery, not one
  asking for an ack) in the order the broker forwarded it, indexed by its offset
  (``origin-seq``, :func:`switchboard.shared.journal.offset`). The broker forwards one
  message to all its subscribers at once, so a gateway and this log see the same order of
  whatever both receive: the offset of the last event a client processed marks exactly
  where it stopped, whatever publisher each event came from. Entries older than the window
  or beyond ``max_entries`` are forgotten.
- **The sessions**: per recoverable socket (by ``pid``) its state — session, rooms — as
  its gateway reported it (ATTACH, SYNC), whether it is attached (and where) or detached
  (since when). A detached session is kept for the window, then forgotten.

A session is *taken* by the gateway a recovering client reached: it answers with the state
(wherever the session was, since a crashed gateway cannot say it lost its sockets) and,
then, what the socket missed after its offset: the log entries that reach it (its rooms,
its namespace, itself), in log order, and each publisher's last number in the log (the
*floor*: live publications at or below it were either replayed or received before).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from enum import Enum
from itertools import islice

from switchboard.shared.envelope import PubKind, Publication, SocketState
from switchboard.shared.journal import offset as offset_of
from switchboard.shared.journal import parse_offset

__all__ = ["Attached", "Missed", "RecoveryState", "Refusal", "Taken", "reaches"]

#: The offset of a socket that has received no logged event yet (the gateway sends it with
#: events that are not in the log, e.g. a reply's): everything since the session began.
START = "0"
ANY_NAMESPACE = "*"


class Refusal(Enum):
    UNKNOWN = "unknown"  #: no such session (never, ended for good, or forgotten)
    EXPIRED = "expired"  #: detached for longer than the window
    OFFSET = "offset"  #: the client's offset is no longer (or never was) in the log


@dataclass(slots=True)
class Held:
    """One recoverable session."""

    state: SocketState
    gateway: str
    attached: bool
    #: When it was attached, or detached (the window counts from there).
    since: float
    #: The log position when the session began (what START means).
    start: int


@dataclass(frozen=True, slots=True)
class Taken:
    state: SocketState
    #: The gateway that held it before (told to forget it), "" if none or the taker.
    previous: str


@dataclass(frozen=True, slots=True)
class Attached:
    """The session is attached on another gateway: it may still be connected there (a pid
    is restored only for a socket that is gone, as in Node), which only that gateway
    knows; the taker asks it, then takes with ``force``."""

    gateway: str
    sid: str


@dataclass(frozen=True, slots=True)
class Missed:
    #: ``(offset, publication)`` in log order.
    entries: list[tuple[str, Publication]]
    #: Publisher origin → its last seq in the log.
    floor: dict[str, int] = field(default_factory=dict)


def reaches(pub: Publication, state: SocketState, rooms: frozenset[str]) -> bool:
    """Whether a logged publication was addressed to the socket of ``state``."""
    session = state.session
    if pub.ns != session.ns and pub.ns != ANY_NAMESPACE:
        return False
    if session.sid in pub.exclude:
        return False
    if pub.sids:
        return session.sid in pub.sids
    if pub.room is not None:
        return pub.room in rooms
    return True


class RecoveryState:
    def __init__(self, namespaces: frozenset[str], window: float = 120.0,
                 max_entries: int = 100_000, max_sessions: int = 100_000) -> None:
        self.namespaces = namespaces
        self.window = window
        self.max_entries = max_entries
        self.max_sessions = max_sessions
        #: (position, offset, received at, publication), oldest first.
        self.entries: deque[tuple[int, str, float, Publication]] = deque()
        self.positions: dict[str, int] = {}
        self.next_position = 1
        #: Origin → the highest seq logged from it.
        self.latest: dict[str, int] = {}
        self.sessions: OrderedDict[str, Held] = OrderedDict()
        self.pid_of: dict[str, str] = {}
        self.counters = {"recovered": 0, "unknown": 0, "expired": 0, "offset": 0,
                         "replayed": 0, "discarded": 0, "forgotten": 0}

    # -- the log ---------------------------------------------------------------------------
    def publication(self, pub: Publication, now: float) -> None:
        """A publication from the broker: logged if recoverable; a server-side disconnect
        ends the sessions it reaches (a kicked or banned socket is not recovered)."""
        if pub.kind is PubKind.EMIT:
            if pub.seq and not pub.ack_event and pub.ns in self.namespaces:
                self._log(pub, now)
        elif pub.kind in (PubKind.DISCONNECT, PubKind.CLOSE):
            for pid in [pid for pid, held in self.sessions.items()
                        if reaches(pub, held.state, frozenset(held.state.rooms))]:
                self._end(pid)
                self.counters["discarded"] += 1

    def _log(self, pub: Publication, now: float) -> None:
        key = offset_of(pub.origin, pub.seq)
        if key in self.positions:
            return  # a duplicate (the broker path replayed it)
        position = self.next_position
        self.next_position += 1
        self.entries.append((position, key, now, pub))
        self.positions[key] = position
        if pub.seq > self.latest.get(pub.origin, 0):
            self.latest[pub.origin] = pub.seq
        if len(self.entries) > self.max_entries:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, key, _, _ = self.entries.popleft()
        self.positions.pop(key, None)

    def expire(self, now: float) -> None:
        """Forget log entries and detached sessions older than the window."""
        horizon = now - self.window
        while self.entries and self.entries[0][2] < horizon:
            self._drop_oldest()
        for pid in [pid for pid, held in self.sessions.items()
                    if not held.attached and held.since < horizon]:
            self._end(pid)
            self.counters["expired"] += 1

    # -- sessions --------------------------------------------------------------------------
    def attach(self, state: SocketState, gateway: str, now: float) -> None:
        """A gateway reports a recoverable socket it holds (new, or its rooms changed).

        Ignored when another gateway took the session meanwhile: a report from the one it
        left may still be on its way."""
        pid = state.pid
        if not pid:
            return
        held = self.sessions.get(pid)
        if held is not None and held.gateway != gateway and held.attached:
            return
        if held is None:
            self.sessions[pid] = Held(state, gateway, True, now, self.next_position - 1)
            while len(self.sessions) > self.max_sessions:
                self._end(next(iter(self.sessions)))
                self.counters["forgotten"] += 1
        else:
            held.state, held.gateway, held.attached, held.since = state, gateway, True, now
        self.pid_of[state.session.sid] = pid

    def detach(self, sid: str, gateway: str, now: float) -> None:
        """The socket's connection dropped: recoverable for the window from now."""
        held = self._by_sid(sid)
        if held is not None and held.gateway == gateway and held.attached:
            held.attached = False
            held.since = now

    def discard(self, sid: str, gateway: str) -> None:
        """The socket left for good (the client disconnected, or the server did)."""
        pid = self.pid_of.get(sid)
        held = self.sessions.get(pid) if pid is not None else None
        if pid is not None and held is not None and held.gateway == gateway:
            self._end(pid)
            self.counters["discarded"] += 1

    def gateway_lost(self, gateway: str, now: float) -> None:
        """A gateway died: its sockets' connections went with it."""
        for held in self.sessions.values():
            if held.gateway == gateway and held.attached:
                held.attached = False
                held.since = now

    def synced(self, gateway: str, states: tuple[SocketState, ...], now: float) -> None:
        """A gateway's full list: what it no longer reports is detached, the rest held."""
        reported = {state.pid for state in states if state.pid}
        for pid, held in self.sessions.items():
            if held.gateway == gateway and held.attached and pid not in reported:
                held.attached = False
                held.since = now
        for state in states:
            self.attach(state, gateway, now)

    def take(self, pid: str, gateway: str, now: float, offset: str = "",
             force: bool = False) -> Taken | Attached | Refusal:
        """A recovering client reached ``gateway``: the session is its (unless its offset
        is no longer in the log: then what it missed cannot be told; or it is attached
        elsewhere and ``force`` is not given: see :class:`Attached`)."""
        held = self.sessions.get(pid)
        if held is None:
            self.counters["unknown"] += 1
            return Refusal.UNKNOWN
        if not held.attached and held.since < now - self.window:
            self._end(pid)
            self.counters["expired"] += 1
            return Refusal.EXPIRED
        if offset not in ("", START) and offset not in self.positions:
            self.counters["offset"] += 1
            return Refusal.OFFSET
        if held.attached and held.gateway != gateway and not force:
            return Attached(held.gateway, held.state.session.sid)
        previous = held.gateway if held.gateway != gateway else ""
        session = replace(held.state.session, gateway=gateway)
        held.state = replace(held.state, session=session)
        held.gateway, held.attached, held.since = gateway, True, now
        self.sessions.move_to_end(pid)
        return Taken(held.state, previous)

    def missed(self, pid: str, offset: str) -> Missed | Refusal:
        """What the session's socket missed after ``offset``, for a gateway that took it."""
        held = self.sessions.get(pid)
        if held is None:
            return Refusal.UNKNOWN
        if offset in ("", START):
            after = held.start
        else:
            position = self.positions.get(offset)
            if position is None or parse_offset(offset) is None:
                self.counters["offset"] += 1
                return Refusal.OFFSET
            after = position
        rooms = frozenset(held.state.rooms)
        state = held.state
        entries = self.entries
        # Positions are consecutive and only the oldest are dropped: index, not search.
        skip = max(after + 1 - entries[0][0], 0) if entries else 0
        found = [(key, pub) for _, key, _, pub in islice(entries, skip, None)
                 if reaches(pub, state, rooms)]
        self.counters["recovered"] += 1
        self.counters["replayed"] += len(found)
        return Missed(found, dict(self.latest))

    def _by_sid(self, sid: str) -> Held | None:
        pid = self.pid_of.get(sid)
        return self.sessions.get(pid) if pid is not None else None

    def _end(self, pid: str) -> None:
        held = self.sessions.pop(pid, None)
        if held is not None and self.pid_of.get(held.state.session.sid) == pid:
            del self.pid_of[held.state.session.sid]

    # -- what it holds (metrics, stats) ----------------------------------------------------
    def stats(self) -> dict[str, int]:
        attached = sum(1 for held in self.sessions.values() if held.attached)
        return {"logEntries": len(self.entries), "attached": attached,
                "detached": len(self.sessions) - attached, **self.counters}
