"""In-memory state that dies with connections: the socket registry and room membership.

Neither is persisted: after a restart both are rebuilt from the gateways (SYNC), which hold
the truth about their own sockets. All methods are synchronous so that a handler's check and
change happen without yielding to another request.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from .model import Member, SocketEntry


class Registry:
    """Every connected namespace socket of the cluster, indexed by user and gateway."""

    def __init__(self) -> None:
        self._sockets: dict[str, SocketEntry] = {}
        self._by_user: dict[tuple[str, str], dict[str, None]] = {}  # (ns, identity) → sids

    def __len__(self) -> int:
        return len(self._sockets)

    def __contains__(self, sid: object) -> bool:
        return sid in self._sockets

    def get(self, sid: str) -> SocketEntry | None:
        return self._sockets.get(sid)

    def add(self, entry: SocketEntry) -> None:
        """Register (or refresh) a socket; idempotent."""
        old = self._sockets.get(entry.sid)
        if old is not None:
            self._unindex(old)
        self._sockets[entry.sid] = entry
        self._by_user.setdefault((entry.ns, entry.identity), {})[entry.sid] = None

    def remove(self, sid: str) -> SocketEntry | None:
        entry = self._sockets.pop(sid, None)
        if entry is not None:
            self._unindex(entry)
        return entry

    def rename(self, sid: str, username: str) -> None:
        entry = self._sockets.get(sid)
        if entry is not None:
            self._sockets[sid] = replace(entry, username=username)

    def set_transport(self, sid: str, transport: str) -> None:
        entry = self._sockets.get(sid)
        if entry is not None:
            self._sockets[sid] = replace(entry, transport=transport)

    def all(self) -> list[SocketEntry]:
        return list(self._sockets.values())

    def _unindex(self, entry: SocketEntry) -> None:
        key = (entry.ns, entry.identity)
        sids = self._by_user.get(key)
        if sids is not None:
            sids.pop(entry.sid, None)
            if not sids:
                del self._by_user[key]

    def user_sockets(self, ns: str, identity: str) -> list[SocketEntry]:
        return [self._sockets[sid] for sid in self._by_user.get((ns, identity), ())]

    def is_online(self, ns: str, identity: str) -> bool:
        return (ns, identity) in self._by_user

    def in_namespace(self, ns: str) -> list[SocketEntry]:
        return [e for e in self._sockets.values() if e.ns == ns]

    def of_gateway(self, gateway_id: str) -> list[SocketEntry]:
        return [e for e in self._sockets.values() if e.gateway == gateway_id]

    def count_by_namespace(self) -> Counter[str]:
        return Counter(e.ns for e in self._sockets.values())


class Membership:
    """Which sockets are in which managed room (namespace ``/``), both ways round."""

    def __init__(self) -> None:
        self._members: dict[str, dict[str, Member]] = {}  # room → sid → member (join order)
        self._rooms_of: dict[str, set[str]] = {}  # sid → rooms

    def count(self, room_id: str) -> int:
        return len(self._members.get(room_id, ()))

    def members(self, room_id: str) -> list[Member]:
        return list(self._members.get(room_id, {}).values())

    def is_member(self, room_id: str, sid: str) -> bool:
        return sid in self._members.get(room_id, ())

    def rooms_of(self, sid: str) -> list[str]:
        return sorted(self._rooms_of.get(sid, ()))

    def sids(self) -> list[str]:
        return list(self._rooms_of)

    def member(self, sid: str) -> Member | None:
        """``sid`` as a member of any of its rooms (all say the same of it)."""
        rooms = self._rooms_of.get(sid)
        return self._members[next(iter(rooms))][sid] if rooms else None

    def on_gateway(self, gateway_id: str) -> list[str]:
        """The member sockets connected to ``gateway_id`` now."""
        return [sid for sid in self._rooms_of
                if (member := self.member(sid)) is not None and member.gateway == gateway_id]

    def refresh(self, member: Member) -> None:
        """The socket's entry in each of its rooms replaced (a new name, another gateway)."""
        for room_id in self._rooms_of.get(member.sid, ()):
            self._members[room_id][member.sid] = member

    def add(self, room_id: str, member: Member) -> None:
        self._members.setdefault(room_id, {})[member.sid] = member
        self._rooms_of.setdefault(member.sid, set()).add(room_id)

    def remove(self, room_id: str, sid: str) -> Member | None:
        """Take ``sid`` out of ``room_id``; the member it was, or None if it was not one."""
        members = self._members.get(room_id)
        member = None if members is None else members.pop(sid, None)
        if members is None or member is None:
            return None
        if not members:
            del self._members[room_id]
        rooms = self._rooms_of.get(sid)
        if rooms is not None:
            rooms.discard(room_id)
            if not rooms:
                del self._rooms_of[sid]
        return member

    def rename(self, sid: str, username: str) -> None:
        member = self.member(sid)
        if member is not None:
            self.refresh(replace(member, username=username))
