"""Sliding-window rate limiting with an injectable clock.

Why a sliding log rather than fixed windows: a fixed window lets a client send twice the limit
across a window boundary (20 at 9.9 s, 20 more at 10.1 s). The log keeps, per key, the times
of its last ``limit`` accepted hits, so "at most ``limit`` in any ``window`` seconds" holds
exactly, with memory bounded by ``limit`` timestamps per active key. Refused hits are not
recorded: a client that keeps flooding is refused until its accepted hits age out, and one
that slows down is served again at once.

State is in this process's memory: each gateway keeps the connect limits of the clients that
reach it (gateway.gatekeeper) and the event limits of its sockets and users
(gateway.policing).
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable


def client_key(address: str) -> str:
    """The rate-limit key of a client address: its IP, an IPv6 client by its /64.

    The gateway should pass the bare IP; a ``host:port`` form is tolerated so that a port
    never makes every connection look like a new client. IPv6 users commonly own a whole /64,
    so limiting single addresses would not limit them at all.
    """
    text = address.strip()
    host, sep, port = text.rpartition(":")
    candidates = [text]
    if sep and port.isdigit():
        candidates.append(host.strip("[]"))
    for candidate in candidates:
        try:
            ip = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
        return str(ip)
    return text


def connector_key(user_id: str | None, address: str) -> str:
    """Whose connects count together: a user with a valid token by itself (thousands of
    users share an office's or a carrier's address: a user is no flood), an anonymous socket
    by its address (:func:`client_key`)."""
    return f"user:{user_id}" if user_id is not None else client_key(address)


class SlidingWindow:
    """At most ``limit`` hits per ``window`` seconds for each key; ``limit <= 0``: no limit."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._last_prune = clock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        hits = self._hits.get(key)
        if hits is not None:
            horizon = now - self.window
            while hits and hits[0] <= horizon:
                hits.popleft()
        return hits

    def allowed(self, key: str, limit: int | None = None) -> bool:
        """Would one more hit for ``key`` be within the limit (``limit``, if given, a lower
        one for this key)? Records nothing."""
        if self.limit <= 0:
            return True
        hits = self._recent(key, self.clock())
        return hits is None or len(hits) < min(limit or self.limit, self.limit)

    def add(self, key: str) -> None:
        """Record a hit for ``key`` (call after :meth:`allowed` said yes)."""
        if self.limit <= 0:
            return
        now = self.clock()
        self._prune(now)
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque(maxlen=self.limit)
        hits.append(now)

    def hit(self, key: str) -> bool:
        """Check and record in one step; False (nothing recorded) when over the limit."""
        if not self.allowed(key):
            return False
        self.add(key)
        return True

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may hit again (0 when it may now)."""
        if self.allowed(key):
            return 0.0
        return max(self._hits[key][0] + self.window - self.clock(), 0.0)

    def forget(self, key: str) -> None:
        self._hits.pop(key, None)

    def __len__(self) -> int:
        return len(self._hits)

    def _prune(self, now: float) -> None:
        # Keys that went quiet are dropped once per window: memory follows active keys only,
        # at an amortised cost of O(1) per hit.
        if now - self._last_prune < self.window:
            return
        self._last_prune = now
        horizon = now - self.window
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= horizon]:
            del self._hits[key]
