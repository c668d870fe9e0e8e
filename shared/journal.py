"""A publisher's numbering and memory of what it published, so that a gateway that missed
some of it (a broker crash) can have it again (pure: no sockets, time passed in).

Every publication of one publisher process (``origin``, random per start) gets the next
``seq``. Every ``beat_interval`` the publisher also publishes a *beat*: the latest ``seq`` and
a counter, the ``epoch``, that the beat increments; every publication carries the epoch of
the last beat before it. One path — publisher → broker → gateway — is FIFO, so a gateway
that receives beat ``e`` and has seen beat ``e - 1`` has received everything published
before it on its topics. A beat it never saw (the epoch jumped) means the path broke: the
gateway asks the publisher (over request/reply, which does not pass through the broker) for
everything after the last beat it did see, and drops what it already has by ``seq``. See
:mod:`switchboard.gateway.continuity` for the gateway's side, docs/delivery.md for the
guarantee.

A publisher with several brokers numbers each path (publisher → broker k) on its own, as the
origin ``<origin>/<k>`` (:meth:`Journal.for_path`): a gateway then sees each path as one FIFO
stream, as with one broker, and a broker's crash makes only its paths replay.

The journal keeps the last ``size`` publications, none older than ``keep`` seconds: a
gateway that fell further behind gets what is left and is told (``complete`` False).
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass

from switchboard.shared.envelope import JournalEntry, ReplayBatch

__all__ = ["Journal", "Stamp", "offset", "parse_offset"]


def offset(origin: str, seq: int) -> str:
    """The offset a recoverable event carries as its last argument (connection state
    recovery): the publication's number, readable by the recovery service."""
    return f"{origin}-{seq:x}"


def parse_offset(value: str) -> tuple[str, int] | None:
    origin, sep, seq = value.rpartition("-")
    if not sep or not origin:
        return None
    try:
        return origin, int(seq, 16)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a publication carries: its publisher, its number, the last beat before it."""

    origin: str
    seq: int
    epoch: int


class Journal:
    """Numbers publications, remembers them (bounded), answers replays."""

    def __init__(self, size: int = 50_000, keep: float = 60.0, origin: str | None = None) -> None:
        self.origin = origin or secrets.token_hex(8)
        self.size = size
        self.keep = keep
        self.seq = 0
        self.epoch = 0
        #: (seq, published at, topic, encoded publication), oldest first.
        self._entries: deque[tuple[int, float, bytes, bytes]] = deque()

    def for_path(self, k: int) -> Journal:
        """A journal like this one for this publisher's path through broker ``k``."""
        return Journal(self.size, self.keep, f"{self.origin}/{k}")

    def stamp(self) -> Stamp:
        """The next publication's stamp (call :meth:`record` once it is encoded)."""
        self.seq += 1
        return Stamp(self.origin, self.seq, self.epoch)

    def record(self, seq: int, now: float, topic: bytes, body: bytes) -> None:
        entries = self._entries
        entries.append((seq, now, topic, body))
        if len(entries) > self.size:
            entries.popleft()

    def beat(self, now: float) -> Stamp:
        """The next beat's stamp (a new epoch); forgets what is older than ``keep``."""
        self.epoch += 1
        entries, horizon = self._entries, now - self.keep
        while entries and entries[0][1] < horizon:
            entries.popleft()
        return Stamp(self.origin, self.seq, self.epoch)

    def path_broken(self) -> None:
        """The broker is new (or we reconnected): what follows carries a new epoch, so every
        gateway notices a gap at the next publication even before the next beat."""
        self.epoch += 1

    def replay(self, after: int, limit: int = 10_000) -> ReplayBatch:
        """Everything after ``after`` (at most ``limit``, oldest first)."""
        entries = self._entries
        oldest = entries[0][0] if entries else self.seq + 1
        complete = after + 1 >= oldest or after >= self.seq
        chosen = [JournalEntry(seq, topic, body) for seq, _, topic, body in entries
                  if seq > after]
        more = len(chosen) > limit
        chosen = chosen[:limit]
        upto = chosen[-1].seq if more else self.seq
        return ReplayBatch(self.origin, self.epoch, upto, complete, more, tuple(chosen))

    def __len__(self) -> int:
        return len(self._entries)
