"""Which service handles what, built from the services' self-descriptions (DESCRIBE).

Pure data: no I/O. Rebuilt whenever a service (re)describes itself.

A partitioned service (rooms by room id, presence by user id) is a *group* of instances,
each one a service of its own in ``--services`` that describes the same routes and names
the group's members. A group is one owner or one CONNECT stage here (:class:`Owner`); which
instance answers is chosen per request from the route's key (:meth:`Owner.pick`), or every
instance is asked (key ``all``). Listeners (DISCONNECT, CONNECTED, UPDATE, SYNC) are every
instance, each keeping what it owns (CONNECTED skips the instance that was the stage:
:mod:`.connects`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from switchboard.shared.envelope import RequestKind, ServiceInfo, Session
from switchboard.shared.partitions import ALL, Membership, key_of

WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class Owner:
    """Who answers a request: one service, or the instance of a group its key hashes to."""

    name: str
    key: str = ""
    group: Membership | None = None

    @property
    def gathered(self) -> bool:
        """Every instance is asked, and their answers merged."""
        return self.group is not None and self.key == ALL

    @property
    def members(self) -> tuple[str, ...]:
        return self.group.members if self.group is not None else (self.name,)

    def pick(self, session: Session, args: list[Any]) -> str:
        """The service to send this socket's request with ``args`` to."""
        group = self.group
        if group is None:
            return self.name
        if len(group.members) == 1:
            return group.members[0]
        return group.owner(key_of(self.key, session.identity, args))


class RoutingTable:
    def __init__(self, infos: Iterable[ServiceInfo] = ()) -> None:
        self.infos: dict[str, ServiceInfo] = {}
        self._namespaces: frozenset[str] = frozenset()
        self._connect: dict[str, tuple[Owner, ...]] = {}
        self._filters: dict[str, tuple[str, ...]] = {}
        self._owners: dict[tuple[str, str], Owner] = {}
        self._groups: dict[str, Membership] = {}
        self._group_of: dict[str, str] = {}
        self._disconnect: dict[str, tuple[str, ...]] = {}
        self._connected: dict[str, tuple[str, ...]] = {}
        self._update: dict[str, tuple[str, ...]] = {}
        self._recovery: str | None = None
        self._policy: str | None = None
        self._keys: str | None = None
        for info in infos:
            self.infos[info.name] = info
        self._rebuild()

    def update(self, info: ServiceInfo) -> None:
        self.infos[info.name] = info
        self._rebuild()

    def _rebuild(self) -> None:
        groups: dict[str, Membership] = {}
        for info in self.infos.values():
            if info.group:
                # The newest view of a group wins (instances of an older epoch may still be
                # described here for a while).
                known = groups.get(info.group)
                if known is None or info.epoch > known.epoch:
                    groups[info.group] = Membership.of(info.members or (info.name,), info.epoch)
        self._groups = groups
        self._group_of = {info.name: info.group for info in self.infos.values() if info.group}
        namespaces: set[str] = set()
        for info in self.infos.values():
            for route in info.routes:
                if route.kind == RequestKind.CONNECT and route.ns != WILDCARD:
                    namespaces.add(route.ns)
        self._namespaces = frozenset(namespaces)
        self._connect = {ns: self._connect_stages(ns) for ns in namespaces}
        self._filters = {ns: self._stages(RequestKind.FILTER, ns) for ns in namespaces}
        self._disconnect = {ns: self._stages(RequestKind.DISCONNECT, ns) for ns in namespaces}
        self._connected = {ns: self._stages(RequestKind.CONNECTED, ns) for ns in namespaces}
        self._update = {ns: self._stages(RequestKind.UPDATE, ns) for ns in namespaces}
        owners: dict[tuple[str, str], Owner] = {}
        for info in self.infos.values():
            for route in info.routes:
                if route.kind == RequestKind.EVENT:
                    # An exact namespace beats a wildcard, whatever the declaration order.
                    key = (route.ns, route.event)
                    if key not in owners or route.ns != WILDCARD:
                        owners[key] = self._owner(info.name, route.key)
        self._owners = owners
        self._recovery = self._serving(RequestKind.RECOVER)
        self._policy = self._serving(RequestKind.POLICY)
        self._keys = self._serving(RequestKind.KEYS)

    def _owner(self, name: str, key: str) -> Owner:
        group = self._group_of.get(name)
        if group is None:
            return Owner(name)
        return Owner(group, key, self._groups[group])

    def _connect_stages(self, ns: str) -> tuple[Owner, ...]:
        """The CONNECT stages of ``ns``, a group's instances as one stage."""
        keys = {info.name: route.key for info in self.infos.values() for route in info.routes
                if route.kind == RequestKind.CONNECT and route.ns in (ns, WILDCARD)}
        stages: list[Owner] = []
        for name in self._stages(RequestKind.CONNECT, ns):
            stage = self._owner(name, keys[name])
            if stage not in stages:
                stages.append(stage)
        return tuple(stages)

    def _serving(self, kind: RequestKind) -> str | None:
        return next((info.name for info in self.infos.values()
                     if any(route.kind == kind for route in info.routes)), None)

    def _current(self, info: ServiceInfo) -> bool:
        """Whether ``info`` is a service, or an instance its group has as a member now: one
        that left (handed its share over, or its lease lapsed) holds no sockets, and is
        told of none."""
        group = self._groups.get(info.group) if info.group else None
        return group is None or info.name in group.members

    def _stages(self, kind: RequestKind, ns: str) -> tuple[str, ...]:
        """Current services with a ``kind`` route for ``ns`` or ``*``, by ascending
        priority."""
        found: dict[str, int] = {}
        for info in self.infos.values():
            if not self._current(info):
                continue
            for route in info.routes:
                if route.kind == kind and route.ns in (ns, WILDCARD):
                    prio = found.get(info.name)
                    # An exact route's priority wins over the wildcard's.
                    if prio is None or route.ns == ns:
                        found[info.name] = route.priority
        return tuple(sorted(found, key=lambda name: (found[name], name)))

    @property
    def namespaces(self) -> frozenset[str]:
        return self._namespaces

    def connect_stages(self, ns: str) -> tuple[Owner, ...]:
        return self._connect.get(ns, ())

    def partitioned(self, name: str) -> bool:
        """Whether service ``name`` is an instance of a partitioned service."""
        return name in self._group_of

    def spare(self, name: str) -> bool:
        """Whether ``name`` is a configured instance of a group that is not among its live
        members now (its lease lapsed, or it never started): the members serve its share,
        so it is not needed."""
        for group, members in self._groups.items():
            configured = {n for info in self.infos.values() if info.group == group
                          for n in info.configured}
            if name in configured and name not in members.members:
                return True
        return False

    def groups(self) -> dict[str, Membership]:
        """Every partitioned service's instances, as last heard."""
        return dict(self._groups)

    def group(self, name: str) -> Membership | None:
        """The instances of partitioned service ``name``, if it is one."""
        return self._groups.get(name)

    def filters(self, ns: str) -> tuple[str, ...]:
        return self._filters.get(ns, ())

    def owner(self, ns: str, event: str) -> Owner | None:
        return self._owners.get((ns, event)) or self._owners.get((WILDCARD, event))

    @property
    def recovery(self) -> str | None:
        """The service keeping recoverable sessions (connection state recovery), if any."""
        return self._recovery

    @property
    def policy(self) -> str | None:
        """The service publishing the policy gateways enforce on events (moderation)."""
        return self._policy

    @property
    def keys(self) -> str | None:
        """The service handing out the keys tokens are checked with (auth)."""
        return self._keys

    def connected_listeners(self, ns: str) -> tuple[str, ...]:
        return self._connected.get(ns, ())

    def disconnect_listeners(self, ns: str) -> tuple[str, ...]:
        return self._disconnect.get(ns, ())

    def update_listeners(self, ns: str) -> tuple[str, ...]:
        return self._update.get(ns, ())

    def sync_listeners(self) -> tuple[str, ...]:
        return tuple(
            name for name, info in self.infos.items()
            if self._current(info) and any(r.kind == RequestKind.SYNC for r in info.routes)
        )
