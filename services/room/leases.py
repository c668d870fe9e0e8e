"""This room instance's ownership lease in the shared store, and the members it implies:
which instances are alive, as of which epoch, and so which keys this one may serve.

With the PostgreSQL store, each instance renews a lease in the database every quarter of
``--room-lease``. The members are the configured instances whose lease has not
lapsed; when they change, the renewal that sees it moves the membership epoch on, in the
same transaction (``PostgresStore.renew``). Each instance applies a new epoch when its next
renewal brings it (the room service reloads what it now owns), and records the epoch it
applied in its lease.

- **Fail-over.** An instance that dies, or freezes, stops renewing. Its lease lapses, the
  others' next renewal drops it from the members, and its keys (rooms by room id, presence
  by user id) go to the instances that now outweigh it for them (rendezvous hashing).
- **Fencing.** An instance serves only while its lease holds by its own clock:
  :meth:`Leases.valid` ends a safety margin before the store's expiry (the renewal's
  expiry is counted from before it was sent). Each write is stamped with the lease's term
  and the members' epoch when it is queued; a batch commits only if every stamp is still
  the current one (:meth:`Leases.holds`: the lease did not lapse since, the members did not
  change since) and the store agrees, in the batch's own transaction and again at its
  COMMIT, that this process holds the lease unexpired (``PostgresStore.fence``). A frozen
  or cut-off instance that wakes up therefore writes nothing it queued before, and serves
  nothing until its renewal has made it a member again, under a new epoch.
- **Hand-over.** When the members change, an instance lets go of what it lost
  (``on_release``: the room service drains its queued writes), then says it applied the
  change. It loads and serves a key it gained only once every live instance applied it
  (:meth:`Leases.settled`, ``on_change``): the old owner, if alive, let go first. A dead
  old owner is not waited for: its lease lapsed.
- **Leaving.** An instance asked to stop (SIGTERM) with ``--room-handover`` serves
  nothing more, drains its queued writes and gives its lease back (:meth:`Leases.leave`):
  the others take its keys at their next renewal instead of when its lease would lapse.
- **Restart in place.** A new process of the same instance takes its lease over at once
  (its first renewal; the lease names the process as ``holder``): the members do not
  change, and nothing moves. An old process still alive finds another holder at its next
  renewal and stops (:attr:`Leases.replaced`); its writes are refused meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from switchboard.shared.partitions import Membership

from .store import LeaseView

log = logging.getLogger("switchboard.room.leases")

#: Renewals per lease: a lease survives three renewals lost in a row.
RENEWALS_PER_LEASE = 4
#: Of a lease, what this instance does not count on (clock rates, a slow renewal).
MARGIN = 0.1


class LeaseStore(Protocol):
    async def renew(self, instance: str, holder: str, ttl: float, applied: int,
                    configured: tuple[str, ...], take_over: bool = False) -> LeaseView: ...

    async def leave(self, instance: str, holder: str,
                    configured: tuple[str, ...]) -> LeaseView: ...


class Leases:
    """The one owner of this instance's lease and of its view of the members."""

    def __init__(
        self,
        store: LeaseStore,
        instance: str,
        holder: str,
        configured: tuple[str, ...],
        ttl: float,
        on_change: Callable[[Membership], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
        on_release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.instance = instance
        self.holder = holder
        self.configured = configured
        self.ttl = ttl
        #: Called once every live instance applied the members: load what this one owns.
        self.on_change = on_change
        #: Called when the members change, before this one says it applied them: let go of
        #: what it queued (the room service drains its writes).
        self.on_release = on_release
        self.clock = clock
        #: The members applied, and those before them (for what a change moved).
        self.membership = Membership.of((), 0)
        self.previous = self.membership
        #: Live instances that have not applied :attr:`membership` yet.
        self._waiting: frozenset[str] = frozenset()
        self._valid_until = float("-inf")
        self._lapsed_logged = False
        #: Raised each time the lease is renewed after it had lapsed: writes made before
        #: (a frozen process's) never commit.
        self.term = 0
        #: The epoch whose keys this instance has loaded (``on_change``); -1: none yet.
        self._taken = -1
        self._renewed = False
        #: Another process of this instance took the lease: this one serves nothing again.
        self.replaced = False
        #: Stopping (:meth:`leave`): this one serves nothing more, and renews no more.
        self.leaving = False

    @property
    def epoch(self) -> int:
        return self.membership.epoch

    @property
    def interval(self) -> float:
        return self.ttl / RENEWALS_PER_LEASE

    def stamp(self) -> object:
        return (self.term, self.membership.epoch)

    def holds(self, stamps: list[object]) -> bool:
        """Whether writes made under ``stamps`` may commit now: the lease holds, it has not
        lapsed since, and the members they were made under are still the applied ones (a
        write made just before a change commits only if it was made after it)."""
        now = self.stamp()
        return self.valid() and all(stamp == now for stamp in stamps)

    def valid(self) -> bool:
        """Whether this instance may serve now: its lease holds by its own clock."""
        return not self.replaced and self.clock() < self._valid_until

    def accepts(self, key: str) -> bool:
        """Whether this instance may serve ``key`` now: its lease holds, it owns the key,
        and if the key was another's before, every live instance has applied the move."""
        if self.leaving or not self.valid() or not self.membership.members:
            return False
        if self.membership.owner(key) != self.instance:
            return False
        if self.previous.members and self.previous.owner(key) == self.instance:
            return True  # kept through the change
        # Gained (or, after a lapse or at start, not known to be kept): once the others
        # have let go, and this one has loaded it since.
        return self.settled

    async def renew(self) -> bool:
        """One renewal; applies new members, and then says so at once (a renewal more),
        so that an instance waiting for it to let go does not wait a renewal interval.
        False when the store could not be reached (the lease then lapses at its time,
        unless a later renewal makes it)."""
        for _ in range(3):
            applied = self.epoch
            if not await self._renew_once():
                return False
            if self.epoch == applied:
                return True
        return True

    async def _renew_once(self) -> bool:
        if self.replaced or self.leaving:
            return False
        sent = self.clock()
        try:
            view = await asyncio.wait_for(
                self.store.renew(self.instance, self.holder, self.ttl, self.epoch,
                                 self.configured, take_over=not self._renewed),
                self.interval * 2)
        except Exception as exc:
            if self.clock() >= self._valid_until and not self._lapsed_logged:
                log.error("lease of %s lapsed: the store did not answer (%s); refusing "
                          "its rooms until it does", self.instance, exc)
                self._lapsed_logged = True
            return False
        if view.replaced:
            log.error("lease of %s taken by another process of it (restarted while this one "
                      "was thought dead): this process serves nothing more", self.instance)
            self.replaced = True
            return False
        self._renewed = True
        if self.clock() >= self._valid_until and self._valid_until > float("-inf"):
            log.warning("lease of %s had lapsed (frozen or cut off?); renewed: its rooms "
                        "are reloaded", self.instance)
            # Whatever this process believed meanwhile may be stale: reload it all, even
            # if the members look the same; and what it queued before never commits.
            self.membership = Membership.of((), 0)
            self.term += 1
        self._lapsed_logged = False
        self._valid_until = sent + self.ttl * (1 - MARGIN)
        # Before the change is applied: requests served meanwhile are judged by it.
        self._waiting = view.unapplied - {self.instance}
        if view.epoch != self.membership.epoch or view.members != self.membership.members:
            new = Membership(view.epoch, view.members)
            log.warning("instances %s (epoch %d; were %s)", ", ".join(new.members) or "none",
                        new.epoch, ", ".join(self.membership.members) or "none")
            self.previous = self.membership
            self.membership = new
            await self._release()
        if self._taken != self.epoch and not self._waiting:
            # Every live instance let go of what moved: load what this one owns now (a
            # failure is retried at the next renewal, the renewals go on).
            epoch = self.epoch
            try:
                await self.on_change(self.membership)
            except Exception:
                log.exception("lease of %s: loading what it owns failed; retrying",
                              self.instance)
            else:
                self._taken = epoch
        return True

    async def _release(self) -> None:
        """Let go of what this instance queued (``on_release``); a failure there is the
        writes' own (their senders are told), not the lease's."""
        if self.on_release is not None:
            with contextlib.suppress(Exception):
                await self.on_release()

    @property
    def settled(self) -> bool:
        """Every live instance applied the members, and this one loaded what it owns."""
        return not self._waiting and self._taken == self.epoch

    async def acquire(self, timeout: float) -> None:
        """The first renewal, and then until the members are settled: every live instance
        has applied the epoch this one joined in (bounded by ``timeout``)."""
        deadline = self.clock() + timeout
        while True:
            renewed = await self.renew()
            if renewed and self.settled:
                return
            if self.clock() >= deadline:
                if not renewed:
                    raise TimeoutError(f"lease of {self.instance}: the store did not answer")
                log.warning("lease of %s: %s not settled in %.1f s; going on", self.instance,
                            ", ".join(sorted(self._waiting)), timeout)
                return
            await asyncio.sleep(min(self.interval, 0.2))

    async def leave(self) -> None:
        """Serve nothing more, let go of what was queued (committed, as it was made under
        a valid lease), and give the lease back, moving the members on: the others take
        this instance's keys at their next renewal. Called with the renewals stopped."""
        self.leaving = True
        await self._release()
        try:
            view = await asyncio.wait_for(
                self.store.leave(self.instance, self.holder, self.configured),
                self.interval * 2)
        except Exception as exc:
            log.error("lease of %s not given back (%s): its rooms move when it lapses",
                      self.instance, exc)
            return
        log.warning("lease of %s given back: its rooms and users move to %s (epoch %d)",
                    self.instance, ", ".join(view.members) or "none", view.epoch)

    async def run(self, stop: asyncio.Event) -> None:
        """Renew every :attr:`interval` until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if not stop.is_set():
                await self.renew()
