"""What an event needs from moderation on its way, replicated to every gateway.

Moderation owns bans, mutes and the per-user spread of sockets over gateways, and takes every
decision that changes them; what a gateway needs to judge an event (is this user banned or
muted, is this socket or user over its rate) it holds as a :class:`PolicyReplica`, kept
current the way a replica of any log is:

1. subscribe to the policy topic (:data:`shared.topics.POLICY`) first;
2. ask moderation for a :class:`PolicySnapshot` (``RequestKind.POLICY``), which names its
   ``instance`` and the ``version`` it is at;
3. apply every :class:`PolicyUpdate` of that instance above that version, in order; drop
   those at or below it (they are in the snapshot).

An update from another instance (moderation restarted) or one that skips a version (one was
lost) makes the replica *behind*: it keeps enforcing what it holds and asks for a snapshot
again (:attr:`PolicyReplica.wants_snapshot`). A replica that never had a snapshot is
*empty*, and events are refused rather than passed unchecked.

Sans-I/O: pure state, no sockets or clocks; times are epoch seconds given by the caller.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

from switchboard.shared.envelope import Envelope

#: A throttle table is swept of ended entries when it grows past this (then past twice what
#: the last sweep kept).
PRUNE_AT = 1024


def prune_ended(table: dict[str, float], now: float) -> dict[str, float]:
    """``table`` without the entries that ended by ``now``."""
    return {key: until for key, until in table.items() if until > now}


class Change(IntEnum):
    """What a :class:`PolicyUpdate` changes, about its ``user``."""

    BAN = 0  #: banned until ``until`` (None: for ever)
    UNBAN = 1
    MUTE = 2  #: muted until ``until``
    UNMUTE = 3
    SPREAD = 4  #: the user's sockets are on ``count`` gateways (1: just one, the usual)
    THROTTLE = 5  #: connector ``user`` (``user:<id>``, or an address) opened as many
    #: sockets as the connect limit allows, cluster-wide: no more until ``until``


@dataclass(frozen=True, slots=True)
class Rules(Envelope):
    """The limits moderation was started with: ``[event_limit, user_event_limit,
    event_window, muted_events, connect_limit, connect_window]``; a limit of 0 is off.
    ``muted_events``: ``"ns event"`` strings a muted user may not send; ``connect_limit``:
    new sockets per ``connect_window`` seconds per user (per address for anonymous ones)."""

    event_limit: int = 20
    user_event_limit: int = 20
    event_window: float = 10.0
    muted_events: tuple[str, ...] = ()
    connect_limit: int = 50
    connect_window: float = 60.0

    def mutes(self, ns: str, event: str) -> bool:
        return f"{ns} {event}" in self.muted_events


@dataclass(frozen=True, slots=True)
class PolicyUpdate(Envelope):
    """``[instance, version, change, user, until, count]``: version ``version`` of the
    policy of moderation instance ``instance``."""

    _enums: ClassVar[dict[str, type[IntEnum]]] = {"change": Change}

    instance: str
    version: int
    change: Change
    user: str
    until: float | None = None
    count: int = 1


@dataclass(frozen=True, slots=True)
class PolicySnapshot(Envelope):
    """``[instance, version, rules, bans, mutes, spread, throttles]``: everything a replica
    holds. ``bans`` and ``mutes``: ``[[user, until], …]`` (a ban's until may be None);
    ``spread``: ``[[user, count], …]`` for users on more than one gateway; ``throttles``:
    ``[[connector, until], …]``."""

    _nested: ClassVar[dict[str, type[Envelope]]] = {"rules": Rules}

    instance: str
    version: int
    rules: Rules = field(default_factory=Rules)
    bans: tuple[Any, ...] = ()
    mutes: tuple[Any, ...] = ()
    spread: tuple[Any, ...] = ()
    throttles: tuple[Any, ...] = ()


class ReplicaState(enum.Enum):
    EMPTY = "empty"  #: no snapshot yet: events are refused
    CURRENT = "current"  #: every update since the snapshot applied
    BEHIND = "behind"  #: an update was missed or moderation restarted: a snapshot is due


class Applied(enum.Enum):
    """What :meth:`PolicyReplica.apply` did with an update."""

    APPLIED = "applied"
    STALE = "stale"  #: at or below the version held: already in it
    HELD = "held"  #: no snapshot yet: kept until one comes
    BEHIND = "behind"  #: a gap or another instance: a snapshot is due


#: Updates an empty replica keeps while it waits for its first snapshot.
MAX_HELD = 10_000


class PolicyReplica:
    """A gateway's copy of moderation's policy (see the module docstring)."""

    def __init__(self) -> None:
        self.state = ReplicaState.EMPTY
        self.instance = ""
        self.version = 0
        self.rules = Rules()
        self._bans: dict[str, float | None] = {}
        self._mutes: dict[str, float] = {}
        self._spread: dict[str, int] = {}
        self._throttles: dict[str, float] = {}
        self._prune_at = PRUNE_AT
        self._held: list[PolicyUpdate] = []

    # -- keeping it current -----------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """A snapshot was loaded: events can be judged (BEHIND still judges, by what it has)."""
        return self.state != ReplicaState.EMPTY

    @property
    def wants_snapshot(self) -> bool:
        return self.state != ReplicaState.CURRENT

    def load(self, snapshot: PolicySnapshot) -> None:
        """Replace everything with ``snapshot``, then apply what arrived while it was asked
        for (updates of its instance above its version)."""
        # Everything is read before anything is replaced: a malformed snapshot (TypeError,
        # ValueError) leaves the replica as it was.
        bans = {str(user): None if until is None else float(until)
                for user, until in snapshot.bans}
        mutes = {str(user): float(until) for user, until in snapshot.mutes}
        spread = {str(user): int(count) for user, count in snapshot.spread}
        throttles = {str(key): float(until) for key, until in snapshot.throttles}
        if not isinstance(snapshot.rules, Rules):
            raise TypeError("snapshot without rules")
        self.instance, self.version, self.rules = snapshot.instance, snapshot.version, \
            snapshot.rules
        self._bans, self._mutes, self._spread = bans, mutes, spread
        self._throttles = throttles
        self.state = ReplicaState.CURRENT
        held, self._held = self._held, []
        for update in sorted(held, key=lambda u: u.version):
            if update.instance == self.instance and update.version > self.version:
                self.apply(update)

    def suspect(self) -> None:
        """What it holds may have missed an update: keep judging by it, ask again."""
        if self.state == ReplicaState.CURRENT:
            self.state, self._held = ReplicaState.BEHIND, []

    def apply(self, update: PolicyUpdate) -> Applied:
        if self.state == ReplicaState.EMPTY:
            if len(self._held) < MAX_HELD:
                self._held.append(update)
            return Applied.HELD
        if self.state == ReplicaState.BEHIND or update.instance != self.instance \
                or update.version > self.version + 1:
            if self.state != ReplicaState.BEHIND:
                self.state, self._held = ReplicaState.BEHIND, []
            if len(self._held) < MAX_HELD:
                self._held.append(update)
            return Applied.BEHIND
        if update.version <= self.version:
            return Applied.STALE
        self.version = update.version
        user = update.user
        if update.change == Change.BAN:
            self._bans[user] = update.until
        elif update.change == Change.UNBAN:
            self._bans.pop(user, None)
        elif update.change == Change.MUTE and update.until is not None:
            self._mutes[user] = update.until
        elif update.change == Change.UNMUTE:
            self._mutes.pop(user, None)
        elif update.change == Change.SPREAD:
            if update.count > 1:
                self._spread[user] = update.count
            else:
                self._spread.pop(user, None)
        elif update.change == Change.THROTTLE and update.until is not None:
            self._throttles[user] = update.until
        return Applied.APPLIED

    # -- what an event needs ----------------------------------------------------------------
    def banned(self, user: str | None, now: float) -> bool:
        if user is None or user not in self._bans:
            return False
        until = self._bans[user]
        return until is None or until > now

    def muted_until(self, user: str | None, now: float) -> float | None:
        """When the user's mute ends, if one is in force."""
        until = self._mutes.get(user) if user is not None else None
        return until if until is not None and until > now else None

    def throttled(self, connector: str, now: float) -> bool:
        """Whether ``connector`` may open no socket now (the cluster's connect limit); an
        ended throttle is forgotten on the way, and all ended ones once the table has doubled
        (anonymous connectors come and go: each address would stay forever)."""
        if len(self._throttles) > self._prune_at:
            self._throttles = prune_ended(self._throttles, now)
            self._prune_at = max(PRUNE_AT, 2 * len(self._throttles))
        until = self._throttles.get(connector)
        if until is None:
            return False
        if until > now:
            return True
        del self._throttles[connector]
        return False

    def held(self) -> dict[str, int]:
        """How many bans, mutes, spread users and throttles it holds (ended ones included
        until a snapshot, or a look at a throttle, drops them)."""
        return {"bans": len(self._bans), "mutes": len(self._mutes), "spread": len(self._spread),
                "throttles": len(self._throttles)}

    def spread(self, user: str) -> int:
        """On how many gateways the user's sockets are (1 unless moderation said more)."""
        return self._spread.get(user, 1)
