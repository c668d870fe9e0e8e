"""Whether a socket may join a namespace, decided at the gateway before any service is asked:
its token (with the keys and policy the auth service hands out, :mod:`shared.access`), then
its connect rate and ban (moderation's replicated policy, :mod:`shared.policy`). A CONNECT
that passes costs one request, to the namespace's owner.

:class:`Gatekeeper` owns the connect windows of the clients that reach this gateway and the
:class:`~shared.access.Access` it checks tokens with; :class:`KeysFeed` keeps that current.

- Connects are limited per connector — a user with a valid token, or the address of an
  anonymous socket — over the connect window: here, by what this gateway sees; across the
  cluster, by the throttles moderation publishes when a connector's connects on all
  gateways together reach the limit (it counts the CONNECTED the gateways tell it).
- A socket coming back by connection state recovery is no new connection: with
  ``skipMiddlewares`` only its ban is checked; without, its token is checked again and must
  be of the user it was.
- Before the key set (or the policy) was ever loaded, connections are refused
  (``Service unavailable``) rather than let in unchecked; once loaded, they go on with what
  is held while its service is away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from switchboard.shared import topics
from switchboard.shared.access import Access, KeySet
from switchboard.shared.envelope import Recovery, RequestKind, Session
from switchboard.shared.errors import Refused
from switchboard.shared.policy import PolicyReplica
from switchboard.shared.ratewindow import SlidingWindow, connector_key

from .policing import Feed, PolicyServices

log = logging.getLogger("switchboard.gateway.gatekeeper")

UNAVAILABLE = "Service unavailable"
RATE_LIMITED = "Rate limit exceeded"
BANNED = "Banned"


class Gatekeeper:
    """Admits or refuses each CONNECT of this gateway (see the module docstring)."""

    def __init__(self, replica: PolicyReplica, keys_required: Callable[[], bool],
                 policy_required: Callable[[], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.replica = replica
        #: Whether this cluster has an auth service (without one every socket is anonymous)
        #: and a policy service (without one nothing limits connects).
        self.keys_required = keys_required
        self.policy_required = policy_required
        self.clock = clock
        self.access: Access | None = None
        self._rules = replica.rules
        self._per_connector = self._window()

    def _window(self) -> SlidingWindow:
        return SlidingWindow(self._rules.connect_limit, self._rules.connect_window, self.clock)

    def load(self, keys: KeySet) -> None:
        """Check tokens with ``keys`` from now on (:class:`ConfigError` if unusable)."""
        self.access = Access(keys)

    @property
    def instance(self) -> str | None:
        """The auth instance whose keys are held."""
        return self.access.instance if self.access is not None else None

    def admit(self, session: Session, auth: Any, headers: Mapping[str, str],
              recovery: Recovery = Recovery.NONE) -> Session:
        """``session`` as who its token says it is; :class:`Refused` with the client's text
        when it may not join."""
        if recovery != Recovery.SKIP:
            session = self._identified(session, auth, headers, recovery)
        replica = self.replica
        if not replica.ready:
            if self.policy_required():
                raise Refused(UNAVAILABLE)
            return session
        if replica.rules != self._rules:  # a snapshot with other limits
            self._rules = replica.rules
            self._per_connector = self._window()
        user, now = session.user_id, self.clock()
        if recovery != Recovery.SKIP:
            key = connector_key(user, session.address)
            if key and (replica.throttled(key, now) or not self._per_connector.hit(key)):
                log.info("connect rate limit for %s (%s)", key, session.ns)
                raise Refused(RATE_LIMITED)
        if replica.banned(user, now):
            raise Refused(BANNED)
        return session

    def _identified(self, session: Session, auth: Any, headers: Mapping[str, str],
                    recovery: Recovery) -> Session:
        access = self.access
        if access is None:
            if self.keys_required():
                raise Refused(UNAVAILABLE)
            return session
        identity = access.admit(session.ns, auth, headers, recovery, session.user_id,
                                session.address)
        if identity is None:
            return session.with_user(None, None, None)
        return session.with_user(identity.user_id, identity.username, identity.role)

    @staticmethod
    def rooms_of(session: Session) -> tuple[str, ...]:
        """The rooms an admitted socket joins: its user's, so that what is sent to the user
        (a private message, a ban) reaches every socket it has."""
        return (topics.user_room(session.user_id),) if session.user_id is not None else ()


class KeysFeed(Feed):
    """Keeps the :class:`Gatekeeper`'s key set current: asked at start and whenever the
    auth service's instance changes (it restarted, perhaps with other keys)."""

    MISSING = "no keys from {source} yet: connections are refused until it answers"

    def __init__(self, gate: Gatekeeper, source: str | None, services: PolicyServices,
                 interval: float, timeout: float) -> None:
        super().__init__(source, services, interval, timeout)
        self.gate = gate

    def stale(self) -> bool:
        if self.source is None:
            return False
        instance = self.services.instances.get(self.source)
        return self.gate.access is None or (
            instance is not None and instance != self.gate.instance)

    def _load(self, raw: Any) -> KeySet:
        keys = KeySet.from_list(raw)
        self.gate.load(keys)
        return keys

    async def refresh(self) -> bool:
        """Ask for the key set and load it; False when the auth service did not answer."""
        service = self.source
        if service is None:
            return False
        keys = await self._fetch(service, RequestKind.KEYS, "key set", self._load)
        if keys is None:
            return False
        self.loaded_at = time.monotonic()
        log.info("keys of %s loaded (instance %s, %s, %d key%s)", service, keys.instance,
                 keys.algorithm, len(keys.keys), "" if len(keys.keys) == 1 else "s")
        return True
