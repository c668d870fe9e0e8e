"""The gateway's half of moderation: judging each event against the policy moderation
publishes (:mod:`shared.policy`), so that an event goes from its gateway to its owner only.

:class:`EventPolicy` owns the rate windows of this gateway's sockets and users and the
:class:`~shared.policy.PolicyReplica` it judges by; :class:`PolicyFeed` keeps that replica
current (subscribe, snapshot, updates; a new snapshot when moderation restarts or an update
was missed).

- Per-socket limits are exact: every event of a socket passes its one gateway.
- Per-user limits: a user whose sockets are all here (the usual) is limited exactly; one
  moderation says is spread over ``k`` gateways gets ``limit // k`` (at least 1) on each, so
  the cluster never lets it send more than its limit in any window (a user sending from one
  of several gateways gets that share there: the price of not asking moderation per event).
  The windows are this gateway's: a socket or user that moves to another gateway (a
  reconnect, a recovery) starts there with an empty one, so a client that hops gateways may
  send up to one more window's worth per hop.
- Refused: banned users (``you are banned``), muted users' message events (``you are muted
  for N more seconds``), events over a limit (``rate limit exceeded``); and every event
  while no snapshot was ever loaded (``moderation policy not loaded yet``), rather than
  pass it unchecked. A replica whose source went quiet keeps judging by what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from switchboard.shared import topics
from switchboard.shared.envelope import Publication, Reply, RequestKind, Session
from switchboard.shared.errors import ConfigError, EnvelopeError, ServiceUnavailable
from switchboard.shared.policy import Applied, PolicyReplica, PolicySnapshot, PolicyUpdate
from switchboard.shared.ratewindow import SlidingWindow

from . import metrics as m

log = logging.getLogger("switchboard.gateway.policing")

T = TypeVar("T")

RATE_LIMITED = "rate limit exceeded"
BANNED = "you are banned"
NOT_LOADED = "moderation policy not loaded yet, try again"


def muted_text(seconds_left: float) -> str:
    n = max(math.ceil(seconds_left), 1)
    return f"you are muted for {n} more second{'s' if n != 1 else ''}"


class EventPolicy:
    """Judges each event of this gateway's sockets (see the module docstring)."""

    def __init__(self, replica: PolicyReplica, required: Callable[[], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.replica = replica
        #: Whether a policy service is part of this cluster: without one, nothing limits
        #: events here (a cluster of other services than ours).
        self.required = required
        self.clock = clock
        self._rules = replica.rules
        self._per_socket, self._per_user = self._windows()

    def _windows(self) -> tuple[SlidingWindow, SlidingWindow]:
        rules = self._rules
        return (SlidingWindow(rules.event_limit, rules.event_window, self.clock),
                SlidingWindow(rules.user_event_limit, rules.event_window, self.clock))

    def judge(self, session: Session, event: str) -> str | None:
        """Why ``event`` of ``session`` is refused, or None. An event within the limits
        counts against them whatever comes after (a muted user's message too, as any other
        event it sends); one over them, or from a banned user, costs nothing."""
        replica = self.replica
        if not replica.ready:
            if not self.required():
                return None
            m.POLICY_REFUSALS.labels("not_loaded").inc()
            return NOT_LOADED
        if replica.rules != self._rules:  # a snapshot with other limits (not every one)
            self._rules = replica.rules
            self._per_socket, self._per_user = self._windows()
        user = session.user_id
        now = self.clock()
        if replica.banned(user, now):
            # Normally the ban's disconnect got there first; this covers events in flight.
            m.POLICY_REFUSALS.labels("banned").inc()
            return BANNED
        user_limit = None
        if user is not None and self._per_user.limit > 0:
            user_limit = max(self._per_user.limit // replica.spread(user), 1)
        # Both limits are checked before either records: a refused event costs nothing.
        if not self._per_socket.allowed(session.sid) or (
                user is not None and not self._per_user.allowed(user, user_limit)):
            m.POLICY_REFUSALS.labels("rate_limit").inc()
            return RATE_LIMITED
        self._per_socket.add(session.sid)
        if user is not None:
            self._per_user.add(user)
        if self._rules.mutes(session.ns, event):
            until = replica.muted_until(user, now)
            if until is not None:
                m.POLICY_REFUSALS.labels("muted").inc()
                return muted_text(until - now)
        return None

    def forget(self, sid: str) -> None:
        """The socket left: its window goes (a user's stays, it may have other sockets)."""
        self._per_socket.forget(sid)


class PolicyServices(Protocol):
    """What the feed needs of the backbone."""

    @property
    def instances(self) -> dict[str, str]:
        """Each described service's instance id."""

    async def request(self, service: str, kind: RequestKind, timeout: float | None = None,
                      **fields: Any) -> Reply: ...


class Subscriber(Protocol):
    def add(self, topic: bytes) -> asyncio.Future[None] | None: ...


class Feed:
    """Keeps a copy of what a service hands out current: whenever :meth:`stale` says so,
    :meth:`refresh` (every ``interval`` seconds at most, and at once when woken)."""

    def __init__(self, source: str | None, services: PolicyServices, interval: float,
                 timeout: float) -> None:
        #: The service handing it out (None: there is none, and nothing to keep current).
        self.source = source
        self.services = services
        self.interval = interval
        self.timeout = timeout
        #: When the last copy was loaded whole (monotonic), for /health.
        self.loaded_at: float | None = None
        self._wake = asyncio.Event()

    #: What the log says while there is no copy yet ({source}: the service).
    MISSING = "nothing from {source} yet"

    def stale(self) -> bool:
        raise NotImplementedError

    async def refresh(self) -> bool:
        raise NotImplementedError

    async def start(self) -> asyncio.Task[None] | None:
        """The first copy (a warning when the source does not answer yet), then the task
        that keeps it current; None when there is no source."""
        if self.source is None:
            return None
        if not await self.refresh():
            log.warning(self.MISSING.format(source=self.source))
        return asyncio.create_task(self.keep_current())

    async def _fetch(self, service: str, kind: RequestKind, what: str,
                     load: Callable[[Any], T]) -> T | None:
        """Ask ``service`` for ``kind`` and ``load`` the answer's first argument (decode and
        apply it); None, said in the log, when it did not answer or could not be used."""
        try:
            reply = await self.services.request(service, kind, self.timeout)
            if not reply.ok:
                log.warning("%s refused by %s: %s", what, service, reply.error)
                return None
            return load(reply.args[0] if reply.args else None)
        except (EnvelopeError, ConfigError, TypeError, ValueError) as exc:
            log.warning("%s from %s unusable: %s", what, service, exc)
        except ServiceUnavailable as exc:  # tried again at the next interval
            log.warning("%s from %s failed: %s", what, service, exc)
        return None

    async def keep_current(self) -> None:
        """Runs for the gateway's life: a new copy whenever :meth:`stale` says so."""
        while True:
            if self.stale():
                await self.refresh()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)


class PolicyFeed(Feed):
    """Keeps a :class:`PolicyReplica` current: the updates moderation publishes, and a
    snapshot whenever the replica wants one or moderation's instance changed."""

    MISSING = ("no policy from {source} yet: events and connections are refused until it "
               "answers")

    def __init__(self, replica: PolicyReplica, source: str | None, services: PolicyServices,
                 subs: Subscriber, interval: float, timeout: float) -> None:
        super().__init__(source, services, interval, timeout)
        self.replica = replica
        self.subs = subs
        self._subscribed: asyncio.Future[None] | None = None

    def subscribe(self) -> None:
        """Before anything else: updates from now on reach us (the snapshot has the rest)."""
        self._subscribed = self.subs.add(topics.POLICY)

    def on_publication(self, pub: Publication) -> None:
        try:
            update = PolicyUpdate.from_list(pub.args[0] if pub.args else None)
        except EnvelopeError as exc:
            log.warning("undecodable policy update dropped: %s", exc)
            return
        current = self.services.instances.get(self.source) if self.source else None
        if update.instance not in (self.replica.instance, current) and self.replica.ready:
            return  # a late one of an instance that is gone: nothing to ask a snapshot for
        if self.replica.apply(update) == Applied.BEHIND:
            self._wake.set()

    def stale(self) -> bool:
        """The replica is behind its source, or the source restarted since the snapshot."""
        service = self.source
        if service is None:
            return False
        instance = self.services.instances.get(service)
        return self.replica.wants_snapshot or (
            instance is not None and instance != self.replica.instance)

    def _load(self, raw: Any) -> PolicySnapshot:
        snapshot = PolicySnapshot.from_list(raw)
        self.replica.load(snapshot)
        return snapshot

    async def refresh(self) -> bool:
        """Ask for a snapshot and load it; False when the policy service did not answer."""
        service = self.source
        if service is None:
            return False
        subscribed = True
        if self._subscribed is not None and not self._subscribed.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._subscribed), self.timeout)
            except TimeoutError:
                subscribed = False
                log.warning("policy subscription not confirmed by the broker yet")
        snapshot = await self._fetch(service, RequestKind.POLICY, "policy snapshot",
                                     self._load)
        if snapshot is None:
            return False
        if not subscribed:
            # Updates published before the subscription took effect may be missing from
            # both the snapshot's past and the stream: enforce it, and ask again.
            self.replica.suspect()
        self.loaded_at = time.monotonic()
        log.info("policy of %s loaded (instance %s, version %d)", service, snapshot.instance,
                 snapshot.version)
        return True
