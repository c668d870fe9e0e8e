"""Which local sockets are in which namespaces and rooms (:class:`LocalIndex`): the one
owner of that map, which keeps a room's topic subscribed while a local socket is in the room,
and only then."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from switchboard.gateway.client import NsSocket
from switchboard.shared import topics
from switchboard.shared.envelope import Publication

log = logging.getLogger("switchboard.gateway.fanout")

#: Namespace of a publication that targets socket ids in whatever namespace they are.
ANY_NAMESPACE = "*"


class Subscriber(Protocol):
    """What the index needs of the SUB socket (:class:`~.subscriptions.Subscriptions`)."""

    def add(self, topic: bytes) -> asyncio.Future[None] | None: ...

    def remove(self, topic: bytes) -> None: ...


class RoomObserver(Protocol):
    """Told of a live socket's joins and leaves (the Admin UI)."""

    def room_joined(self, sock: NsSocket, room: str) -> None: ...

    def room_left(self, sock: NsSocket, room: str) -> None: ...


class RoomObservers:
    """Several observers as one: the index is built with it, and the parts that watch rooms
    (built after the index, as they query it) sign up with :meth:`add`."""

    def __init__(self, observers: Iterable[RoomObserver] = ()) -> None:
        self.observers = tuple(observers)

    def add(self, observer: RoomObserver) -> None:
        self.observers = (*self.observers, observer)

    def room_joined(self, sock: NsSocket, room: str) -> None:
        for observer in self.observers:
            observer.room_joined(sock, room)

    def room_left(self, sock: NsSocket, room: str) -> None:
        for observer in self.observers:
            observer.room_left(sock, room)


class LocalIndex:
    """Namespaces and rooms → local sockets; drives the subscriptions."""

    def __init__(self, subscriptions: Subscriber, gateway_id: str = "",
                 observer: RoomObserver | None = None) -> None:
        self.subs = subscriptions
        self.gateway_id = gateway_id
        self.observer = observer
        self._by_sid: dict[str, NsSocket] = {}
        #: Sockets being restored by a recovery: their publications are kept, not written.
        self._restoring: dict[str, tuple[NsSocket, list[Publication]]] = {}
        self._namespaces: dict[str, set[NsSocket]] = {}
        self._rooms: dict[tuple[str, str], set[NsSocket]] = {}

    # -- queries ---------------------------------------------------------------------------
    def get(self, sid: str) -> NsSocket | None:
        return self._by_sid.get(sid)

    def sockets(self) -> list[NsSocket]:
        """Every local socket (a copy: the caller may drop some)."""
        return list(self._by_sid.values())

    def count(self, ns: str) -> int:
        return len(self._namespaces.get(ns, ()))

    def counts(self) -> dict[str, int]:
        """Local sockets by namespace."""
        return {ns: len(members) for ns, members in self._namespaces.items()}

    def room_count(self) -> int:
        return len(self._rooms)

    @property
    def restoring(self) -> bool:
        """Whether any socket is being restored (publications are then kept for it)."""
        return bool(self._restoring)

    def restored(self, sock: NsSocket) -> list[Publication]:
        """Its replay is written: hands back the publications kept for it meanwhile (the
        caller writes them); from now on they reach it as any socket's."""
        entry = self._restoring.get(sock.sid)
        if entry is None or entry[0] is not sock:
            return []
        del self._restoring[sock.sid]
        return entry[1]

    # -- changes ---------------------------------------------------------------------------

    def add(self, sock: NsSocket, restoring: bool = False) -> list[asyncio.Future[None] | None]:
        """Index a socket (``restoring``: a recovery restores it, so the live publications
        that reach it are kept until :meth:`restored`)."""
        self._by_sid[sock.sid] = sock
        members = self._namespaces.setdefault(sock.ns, set())
        members.add(sock)
        if restoring:
            self._restoring[sock.sid] = (sock, [])
        confirmations = [self.subs.add(topics.namespace(sock.ns))]
        if self._foreign(sock.sid):
            # Recovered here with another gateway's socket id: what is sent to it goes to
            # that gateway's topic, so follow it by its own.
            confirmations.append(self.subs.add(topics.socket(sock.sid)))
        return confirmations

    def _foreign(self, sid: str) -> bool:
        try:
            return bool(self.gateway_id) and topics.gateway_of(sid) != self.gateway_id
        except ValueError:
            return False

    def remove(self, sock: NsSocket) -> None:
        # By identity, not by sid: a socket restored here under the same id (a recovery
        # racing the old connection's drop) must not lose its entry to the old one's removal.
        if self._by_sid.get(sock.sid) is sock:
            del self._by_sid[sock.sid]
        elif sock not in self._namespaces.get(sock.ns, ()):
            return  # removed already
        self.restored(sock)
        if self._foreign(sock.sid):
            self.subs.remove(topics.socket(sock.sid))
        for room in list(sock.rooms):
            self.leave(sock, room)
        members = self._namespaces.get(sock.ns)
        if members is not None:
            members.discard(sock)
            if not members:
                del self._namespaces[sock.ns]
        self.subs.remove(topics.namespace(sock.ns))

    def join(self, sock: NsSocket, room: str) -> asyncio.Future[None] | None:
        if room in sock.rooms or sock.sid not in self._by_sid:
            return None
        try:
            topic = topics.room(sock.ns, room)
        except ValueError:  # a NUL in the name: refuse before any state changes
            log.warning("ignored join of %s to a room named with NUL", sock.sid)
            return None
        sock.enter(room)
        self._rooms.setdefault((sock.ns, room), set()).add(sock)
        if self.observer is not None and sock.live:
            self.observer.room_joined(sock, room)
        return self.subs.add(topic)

    def leave(self, sock: NsSocket, room: str) -> None:
        if not sock.exit(room):
            return
        if self.observer is not None and sock.live:
            self.observer.room_left(sock, room)
        key = (sock.ns, room)
        members = self._rooms.get(key)
        if members is not None:
            members.discard(sock)
            if not members:
                del self._rooms[key]
        self.subs.remove(topics.room(sock.ns, room))

    def hold(self, pub: Publication) -> None:
        """Keep an EMIT for every socket being restored that it reaches."""
        excluded = set(pub.exclude)
        for sock in self._reached(pub.ns, pub.room, pub.sids):
            entry = self._restoring.get(sock.sid)
            if entry is not None and entry[0] is sock and sock.sid not in excluded:
                entry[1].append(pub)

    def targets(
        self, ns: str, room: str | None, sids: Iterable[str], exclude: Iterable[str]
    ) -> list[NsSocket]:
        """The live sockets a publication reaches."""
        found = self._reached(ns, room, sids)
        if exclude:
            excluded = set(exclude)
            return [s for s in found if s.live and s.sid not in excluded]
        return [s for s in found if s.live]

    def _reached(self, ns: str, room: str | None, sids: Iterable[str]) -> list[NsSocket]:
        if sids:
            found = [self._by_sid[s] for s in sids if s in self._by_sid]
            if ns != ANY_NAMESPACE:  # a socket id names one namespace socket already
                found = [s for s in found if s.ns == ns]
        elif room is not None:
            found = list(self._rooms.get((ns, room), ()))
        else:
            found = list(self._namespaces.get(ns, ()))
        return found
