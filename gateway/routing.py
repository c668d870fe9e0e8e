"""Which service handles what, built from the services' self-descriptions (DESCRIBE).

Pure data: no I/O. Rebuilt whenever a service (re)describes itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from switchboard.shared.envelope import RequestKind, ServiceInfo

WILDCARD = "*"


class RoutingTable:
    def __init__(self, infos: Iterable[ServiceInfo] = ()) -> None:
        self.infos: dict[str, ServiceInfo] = {}
        self._namespaces: frozenset[str] = frozenset()
        self._connect: dict[str, tuple[str, ...]] = {}
        self._filters: dict[str, tuple[str, ...]] = {}
        self._owners: dict[tuple[str, str], str] = {}
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
        namespaces: set[str] = set()
        for info in self.infos.values():
            for route in info.routes:
                if route.kind == RequestKind.CONNECT and route.ns != WILDCARD:
                    namespaces.add(route.ns)
        self._namespaces = frozenset(namespaces)
        self._connect = {ns: self._stages(RequestKind.CONNECT, ns) for ns in namespaces}
        self._filters = {ns: self._stages(RequestKind.FILTER, ns) for ns in namespaces}
        self._disconnect = {ns: self._stages(RequestKind.DISCONNECT, ns) for ns in namespaces}
        self._connected = {ns: self._stages(RequestKind.CONNECTED, ns) for ns in namespaces}
        self._update = {ns: self._stages(RequestKind.UPDATE, ns) for ns in namespaces}
        owners: dict[tuple[str, str], str] = {}
        for info in self.infos.values():
            for route in info.routes:
                if route.kind == RequestKind.EVENT:
                    # An exact namespace beats a wildcard, whatever the declaration order.
                    key = (route.ns, route.event)
                    if key not in owners or route.ns != WILDCARD:
                        owners[key] = info.name
        self._owners = owners
        self._recovery = self._serving(RequestKind.RECOVER)
        self._policy = self._serving(RequestKind.POLICY)
        self._keys = self._serving(RequestKind.KEYS)

    def _serving(self, kind: RequestKind) -> str | None:
        return next((info.name for info in self.infos.values()
                     if any(route.kind == kind for route in info.routes)), None)

    def _stages(self, kind: RequestKind, ns: str) -> tuple[str, ...]:
        """Services with a ``kind`` route for ``ns`` or ``*``, by ascending priority."""
        found: dict[str, int] = {}
        for info in self.infos.values():
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

    def connect_stages(self, ns: str) -> tuple[str, ...]:
        return self._connect.get(ns, ())

    def filters(self, ns: str) -> tuple[str, ...]:
        return self._filters.get(ns, ())

    def owner(self, ns: str, event: str) -> str | None:
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
            if any(r.kind == RequestKind.SYNC for r in info.routes)
        )
