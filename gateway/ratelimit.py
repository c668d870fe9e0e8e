"""Per-client-IP token buckets for plain HTTP routes (pure; time passed in)."""

from __future__ import annotations

import collections
import math


class TokenBuckets:
    """``rate`` requests per ``period`` seconds per key, bursting up to ``rate``.

    Keys are bounded (least recently used evicted), so a flood of source addresses costs a
    fixed amount of memory.
    """

    def __init__(self, rate: int, period: float, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.period = period
        self.max_keys = max_keys
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = (
            collections.OrderedDict()
        )

    def take(self, key: str, now: float) -> float:
        """0 when allowed; else the seconds until a request would be allowed."""
        if self.rate <= 0:
            return 0.0
        refill = self.rate / self.period
        tokens, last = self._buckets.pop(key, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - last) * refill)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1 - tokens) / refill
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


    def give_back(self, key: str) -> None:
        """Return one taken token to ``key``'s bucket (never above its burst)."""
        entry = self._buckets.get(key)
        if entry is not None:
            tokens, last = entry
            self._buckets[key] = (min(float(self.rate), tokens + 1), last)


def retry_after(wait: float) -> str:
    return str(max(1, math.ceil(wait)))
