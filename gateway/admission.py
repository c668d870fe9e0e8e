"""Who may open a new Engine.IO session, per client address (pure: the caller gives the time).

A handshake carries no identity (a client's token comes later, in its CONNECT), so new
sessions are bounded per address: ``rate`` a minute, bursting to as many (``--handshake-rate``).
That bound is meant for floods, and offices, campuses and mobile carriers put thousands of
real users behind one address. So:

- **A session that authenticates gives its handshake back.** Once one of its namespace
  CONNECTs is accepted with a verified user (:meth:`Admission.authenticated`), its token
  returns to its address's bucket: a crowd holding valid tokens only ever has its
  not-yet-authenticated handshakes counted, while anonymous sessions and failed
  authentications keep theirs (a flood of either from one address stays bounded by the
  rate, and costs other addresses nothing).
- **A crowd that was just connected comes back at once.** Every gateway announces, with its
  peer endpoint, the addresses from which it holds at least :data:`CROWD` authenticated
  sessions and how many (:meth:`crowds`). When the connection to a gateway drops (it
  crashed, or stopped), the others grant each of its addresses that many extra handshakes
  for :data:`CREDIT_SECONDS` (:meth:`peer_dropped`): its clients reconnect together, through
  the balancer, to the gateways left, and none of them is turned away.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from switchboard.gateway.ratelimit import TokenBuckets

#: An address with at least this many authenticated sessions here is announced to the peers.
CROWD = 20
#: At most this many addresses are announced (the largest crowds).
MAX_CROWDS = 200
#: How long a dropped peer's crowds may come back without counting against their bucket.
CREDIT_SECONDS = 60.0
#: Refused CONNECTs (a bad token each, say) one session may ask the services about; later
#: ones are refused by the gateway at once: a loop of failed authentications on one
#: session costs the services nothing more, and one on new sessions pays a handshake each.
MAX_REFUSALS = 10
TOO_MANY_REFUSALS = "Too many refused connections"


class Admission:
    """Handshake budgets per address, authenticated sessions per address, and the credit
    of crowds whose gateway went away."""

    def __init__(self, rate: int, period: float = 60.0, max_keys: int = 10_000) -> None:
        self._buckets = TokenBuckets(rate, period, max_keys)
        #: Engine.IO session id → address, for the sessions that authenticated.
        self._authenticated: dict[str, str] = {}
        self._per_address: collections.Counter[str] = collections.Counter()
        #: The last crowds each peer gateway announced.
        self._peer_crowds: dict[str, tuple[tuple[str, int], ...]] = {}
        #: address → (extra handshakes left, until when).
        self._credit: dict[str, tuple[int, float]] = {}
        #: Engine.IO session id → its refused CONNECTs.
        self._refusals: dict[str, int] = {}
        self.counters = {"refused": 0, "refunded": 0, "credited": 0}

    def admit(self, address: str, now: float) -> float:
        """0 when a new session from ``address`` may open; else the seconds to wait."""
        wait = self._buckets.take(address, now)
        if not wait:
            return 0.0
        left, until = self._credit.get(address, (0, 0.0))
        if left > 0 and now < until:
            self._credit[address] = (left - 1, until)
            self.counters["credited"] += 1
            return 0.0
        self._credit.pop(address, None)
        self.counters["refused"] += 1
        return wait

    def authenticated(self, session_id: str, address: str) -> None:
        """The session accepted a CONNECT with a verified user: its handshake goes back (once
        per session, whatever namespaces it joins)."""
        if session_id in self._authenticated:
            return
        self._authenticated[session_id] = address
        self._per_address[address] += 1
        self._buckets.give_back(address)
        self.counters["refunded"] += 1

    def may_ask(self, session_id: str) -> bool:
        """Whether a CONNECT of this session goes to the services (see :data:`MAX_REFUSALS`)."""
        return self._refusals.get(session_id, 0) < MAX_REFUSALS

    def refused(self, session_id: str) -> None:
        self._refusals[session_id] = self._refusals.get(session_id, 0) + 1

    def closed(self, session_id: str) -> None:
        self._refusals.pop(session_id, None)
        address = self._authenticated.pop(session_id, None)
        if address is None:
            return
        self._per_address[address] -= 1
        if self._per_address[address] <= 0:
            del self._per_address[address]

    # -- crowds between gateways -----------------------------------------------------------
    def crowds(self) -> list[list[str | int]]:
        """What to announce: ``[address, authenticated sessions]`` of the largest crowds."""
        return [[address, count]
                for address, count in self._per_address.most_common(MAX_CROWDS)
                if count >= CROWD]

    def peer_crowds(self, gateway: str, crowds: Iterable[object]) -> None:
        """A peer's announcement (malformed entries are skipped)."""
        entries = []
        for entry in crowds:
            if isinstance(entry, (list, tuple)) and len(entry) == 2 and \
                    isinstance(entry[0], str) and isinstance(entry[1], int) and entry[1] > 0:
                entries.append((entry[0], entry[1]))
        self._peer_crowds[gateway] = tuple(entries[:MAX_CROWDS])

    def peer_dropped(self, gateway: str, now: float) -> None:
        """The connection to ``gateway`` dropped: its crowds may come back here at once."""
        for address, count in self._peer_crowds.pop(gateway, ()):
            left, until = self._credit.get(address, (0, 0.0))
            if until <= now:
                left = 0
            self._credit[address] = (left + count, now + CREDIT_SECONDS)

    def forget_peer(self, gateway: str) -> None:
        self._peer_crowds.pop(gateway, None)
