"""On how many gateways each user's sockets are: what moderation tells the gateways so that
together they never let a user past its per-user event limit (gateway.policing)."""

from __future__ import annotations

from collections.abc import Iterable

from switchboard.shared.envelope import Session


class Spread:
    """Users' sockets by gateway; every method returns the users whose gateway count
    changed, with the new count (1 for a user down to one gateway or none)."""

    def __init__(self) -> None:
        self._where: dict[str, dict[str, set[str]]] = {}  # user → gateway → sids
        self._user_of: dict[str, tuple[str, str]] = {}  # sid → (user, gateway)

    def count(self, user: str) -> int:
        return max(len(self._where.get(user, ())), 1)

    def add(self, session: Session) -> list[tuple[str, int]]:
        user = session.user_id
        if user is None or session.sid in self._user_of:
            return []
        before = self.count(user)
        self._where.setdefault(user, {}).setdefault(session.gateway, set()).add(session.sid)
        self._user_of[session.sid] = (user, session.gateway)
        return self._changed(user, before)

    def remove(self, sid: str) -> list[tuple[str, int]]:
        found = self._user_of.pop(sid, None)
        if found is None:
            return []
        user, gateway = found
        before = self.count(user)
        gateways = self._where[user]
        gateways[gateway].discard(sid)
        if not gateways[gateway]:
            del gateways[gateway]
        if not gateways:
            del self._where[user]
        return self._changed(user, before)

    def replace_gateway(self, gateway: str, sessions: Iterable[Session]) -> list[tuple[str, int]]:
        """``gateway``'s sockets are exactly ``sessions`` (its SYNC). The users touched, with
        their count now (one that ends where it began is told again: harmless)."""
        touched = {user for user, _ in self.drop_gateway(gateway)}
        for session in sessions:
            if session.gateway == gateway:
                touched.update(user for user, _ in self.add(session))
        return [(user, self.count(user)) for user in sorted(touched)]

    def drop_gateway(self, gateway: str) -> list[tuple[str, int]]:
        sids = [sid for sid, (_, gw) in self._user_of.items() if gw == gateway]
        changes: dict[str, int] = {}
        for sid in sids:
            changes.update(self.remove(sid))
        return list(changes.items())

    def _changed(self, user: str, before: int) -> list[tuple[str, int]]:
        after = self.count(user)
        return [(user, after)] if after != before else []

    def spread_users(self) -> list[tuple[str, int]]:
        """Users on more than one gateway, with their count (for a snapshot)."""
        return [(user, len(gws)) for user, gws in self._where.items() if len(gws) > 1]
